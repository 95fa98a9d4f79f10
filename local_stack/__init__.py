"""The local stack for tests, the demo and development: a real Kafka broker (KRaft),
the MongoDB stand-in (mongo-java-server), and the JVM artifacts they need.

Nothing here is faked: the broker is Apache Kafka itself, started from jars fetched
from Maven Central by ``make setup``. The MongoDB stand-in is an in-memory server with
change streams; it is a STAND-IN for a real replica set, and says so wherever it runs.
"""
