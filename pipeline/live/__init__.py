"""The live stream: a local Kafka broker, an event producer and one streaming query.

broker    starts a single-node KRaft broker from Apache Kafka's own jars (no Docker)
producer  publishes generated order events (DESIGN.md section 5) to Kafka or a drop folder
events    pure DataFrame transformations: parse, validate, explode, aggregate per minute
stream    the one Structured Streaming query and its exactly-once micro-batch writer
cli       the `kafka`, `produce` and `stream` verbs of `python -m pipeline`
"""
