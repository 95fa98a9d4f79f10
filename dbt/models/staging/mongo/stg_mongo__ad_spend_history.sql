{{ mongo_history(source('mongo', 'ad_spend')) }}
