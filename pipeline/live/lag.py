"""Consumer lag: the topic's end offsets minus the offsets the live query has processed."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pyspark.sql.streaming import StreamingQuery


def progress_dict(query: StreamingQuery | None) -> dict[str, Any] | None:
    if query is None:
        return None
    progress = query.lastProgress
    if progress is None:
        return None
    text = getattr(progress, "json", None)  # a property in PySpark 4.2, a method before
    text = text() if callable(text) else text
    return json.loads(text) if isinstance(text, str) else dict(progress)


def consumer_lag(progress: dict[str, Any] | None, timeout: float = 3.0) -> int | None:
    """End offsets of the topic minus the offsets the query has processed."""
    if not progress or not progress.get("sources"):
        return None
    end = progress["sources"][0].get("endOffset")
    if isinstance(end, str):
        with contextlib.suppress(ValueError):
            end = json.loads(end)
    if not isinstance(end, dict):
        return None
    processed = {(t, int(p)): int(o) for t, parts in end.items() for p, o in parts.items()}
    from pipeline.live.broker import quiet_client_logs

    with quiet_client_logs():
        latest = topic_end_offsets(sorted({t for t, _ in processed}), timeout)
    if latest is None:
        return None
    return sum(max(0, latest.get(tp, 0) - processed.get(tp, 0)) for tp in latest)


def topic_end_offsets(topics: list[str], timeout: float = 3.0) -> dict[tuple[str, int], int] | None:
    from kafka import KafkaConsumer, TopicPartition

    from pipeline.live.broker import client_options

    try:
        consumer = KafkaConsumer(
            **client_options(),
            client_id="shoplake-lag",
            bootstrap_timeout_ms=int(timeout * 1000),
        )
    except Exception:
        return None
    try:
        parts = []
        for topic in topics:
            for p in consumer.partitions_for_topic(topic) or []:
                parts.append(TopicPartition(topic, p))
        if not parts:
            return {}
        ends = consumer.end_offsets(parts, timeout_ms=int(timeout * 1000))
        return {(tp.topic, tp.partition): int(o) for tp, o in ends.items()}
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            consumer.close()
