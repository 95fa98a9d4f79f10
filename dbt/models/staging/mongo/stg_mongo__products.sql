{{ mongo_current_state(ref('stg_mongo__products_history')) }}
