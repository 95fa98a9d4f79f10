{{ mongo_current_state(ref('stg_mongo__orders_history')) }}
