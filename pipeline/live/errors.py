"""The live query's errors, and the one line of a Spark failure a person needs."""

from __future__ import annotations

import re


class StreamError(RuntimeError):
    """The live query could not start or failed; the message says why."""


class StreamStopped(RuntimeError):
    """A micro-batch cut short by stop(); the batch is replayed on the next start."""


# Spark decides whether a failed batch was "interrupted by stop" by a regex over
# the error text (StreamExecution.isInterruptionException); the long Py4J text of
# a real interruption overflows that regex's stack, so a stop says it briefly.
STOP_MESSAGE = (
    "py4j.protocol.Py4JJavaError: An error occurred while calling foreachBatch.\n"
    ": java.lang.InterruptedException: stopped by ShopLake"
)

_EXC_LINE = re.compile(r"^([A-Za-z_][\w.$]*(?:Error|Exception|Stopped)): (.+)$")
_WRAPPERS = ("pyspark.", "py4j.", "org.apache.spark.sql.execution.streaming", "Caused by")


def short(exc: BaseException) -> str:
    """The one line of a streaming failure a person needs: the root exception."""
    text = str(exc)
    found = [
        line.strip()
        for line in text.splitlines()
        if _EXC_LINE.match(line.strip()) and not line.strip().startswith(_WRAPPERS)
    ]
    if found:
        return found[-1][:500]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:500]
