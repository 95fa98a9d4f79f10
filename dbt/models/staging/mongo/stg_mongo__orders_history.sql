{{ mongo_history(source('mongo', 'orders')) }}
