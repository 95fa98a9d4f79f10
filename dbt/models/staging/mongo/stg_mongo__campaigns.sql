{{ mongo_current_state(ref('stg_mongo__campaigns_history')) }}
