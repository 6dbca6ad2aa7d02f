"""The Kafka edge: envelopes, topic names, producer and consumer settings, and the worker loop
with its retry and dead-letter policy. Nothing else in the hub touches the Kafka client."""
