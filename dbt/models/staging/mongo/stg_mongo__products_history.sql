{{ mongo_history(source('mongo', 'products')) }}
