{{ mongo_current_state(ref('stg_mongo__web_sessions_history')) }}
