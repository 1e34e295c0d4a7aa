"""The live stream: a local Kafka broker, an event producer and one streaming query.

broker    starts a single-node KRaft broker from Apache Kafka's own jars (no Docker)
producer  publishes generated order events (docs/contract.md §6) to Kafka or a drop folder
events    pure DataFrame transformations: parse, validate, explode, aggregate per minute
stream    the one Structured Streaming query run in the background (the Live page)
writer    its exactly-once micro-batch writer; plan, arrow_rules, delta_io, query, lag,
          paths, kafka_source, hooks, foreground and dashboard hold its parts (see stream)
health    heartbeats: what runs where, for every page and the command line
cli       the `kafka`, `produce` and `stream` verbs of `python -m pipeline`
"""
