"""The setup's JVM fetch: jar names, and Delta without the jars pyspark already ships."""

from __future__ import annotations

from pathlib import Path

from local_stack.fetch import artifact_name, pyspark_artifacts
from local_stack.paths import component_jars


def test_artifact_names_drop_the_version() -> None:
    assert artifact_name(Path("hadoop-client-api-3.4.2.jar")) == "hadoop-client-api"
    assert artifact_name(Path("delta-spark_4.2_2.13-4.4.0.jar")) == "delta-spark_4.2_2.13"
    assert artifact_name(Path("netty-buffer-4.2.2.Final.jar")) == "netty-buffer"
    assert artifact_name(Path("zstd-jni-1.5.7-3.jar")) == "zstd-jni"


def test_the_cache_holds_each_component() -> None:
    kafka = {artifact_name(jar) for jar in component_jars("kafka")}
    assert {"kafka_2.13", "kafka-clients", "kafka-raft", "log4j-slf4j-impl"} <= kafka
    standin = {artifact_name(jar) for jar in component_jars("mongo-standin")}
    assert {"mongo-java-server-core", "mongo-java-server-memory-backend"} <= standin


def test_delta_brings_no_jar_that_spark_already_has() -> None:
    delta = {artifact_name(jar) for jar in component_jars("delta")}
    assert {"delta-spark_4.2_2.13", "delta-storage"} <= delta
    assert not delta & pyspark_artifacts()


def test_the_s3_connector_matches_the_hadoop_pyspark_ships() -> None:
    s3 = {jar.name for jar in component_jars("s3")}
    (hadoop_aws,) = [name for name in s3 if name.startswith("hadoop-aws-")]
    (client_api,) = [jar.name for jar in (Path(__import__("pyspark").__file__).parent / "jars").glob("hadoop-client-api-*.jar")]
    assert hadoop_aws.removeprefix("hadoop-aws-") == client_api.removeprefix("hadoop-client-api-"), (hadoop_aws, client_api)
    assert any(name.startswith("bundle-2.") for name in s3), "the AWS SDK v2 bundle hadoop-aws was built against"
    assert not {artifact_name(Path(name)) for name in s3} & pyspark_artifacts()
