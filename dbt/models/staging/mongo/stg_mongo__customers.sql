{{ mongo_current_state(ref('stg_mongo__customers_history')) }}
