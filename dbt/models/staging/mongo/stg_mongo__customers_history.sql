{{ mongo_history(source('mongo', 'customers')) }}
