{{ mongo_current_state(ref('stg_mongo__ad_spend_history')) }}
