"""Spark with Delta: the session factory, the dbt runner, table maintenance, lake counts and verify.

spark_jobs.session       build_spark_session(), write_spark_defaults()
spark_jobs.dbt_runner    DbtRunner(settings).run_all() / run_forever()
spark_jobs.maintenance   maintain(spark, lake_root, settings): OPTIMIZE, Z-ORDER, VACUUM
spark_jobs.lake_tables   layer_counts(lake_root): rows per silver and gold table
spark_jobs.verify        verify_silver(database, collections, lake_root): MongoDB against silver by document hash
spark_jobs.cli           the ``spark-jobs`` console script
"""
