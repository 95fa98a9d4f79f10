"""MongoDB change streams to Kafka: snapshot, stream, checkpoint, replay."""
