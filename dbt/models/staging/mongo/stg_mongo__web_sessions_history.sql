{{ mongo_history(source('mongo', 'web_sessions')) }}
