{{ mongo_history(source('mongo', 'campaigns')) }}
