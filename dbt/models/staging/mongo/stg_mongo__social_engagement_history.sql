{{ mongo_history(source('mongo', 'social_engagement')) }}
