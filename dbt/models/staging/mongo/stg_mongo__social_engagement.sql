{{ mongo_current_state(ref('stg_mongo__social_engagement_history')) }}
