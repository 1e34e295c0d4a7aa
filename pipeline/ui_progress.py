"""What Spark is doing right now, from the SparkContext's status tracker.

The Pipeline page polls `SparkWatch.poll()` while a run executes in a
background thread, and shows stages and tasks instead of a bare spinner. The
status tracker is a cheap driver-side call (no job is started). Structured
Streaming (Bronze's availableNow ingestion) runs its jobs under its own job
group, so the watch follows every stage that becomes active during the run,
not one job group. With Spark Connect there is no SparkContext; the watch
then reports nothing and the page shows the engine's own progress only.
No Streamlit import here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageProgress:
    stage_id: int
    name: str
    tasks: int
    active: int
    completed: int
    failed: int
    done: bool


@dataclass
class SparkWatch:
    """Accumulates the stages seen since the watch was made (a run's stages)."""

    spark: Any
    stages: dict[int, StageProgress] = field(default_factory=dict)
    jobs_seen: set[int] = field(default_factory=set)
    _baseline: set[int] = field(default_factory=set)
    available: bool = True

    def __post_init__(self) -> None:
        tracker = self._tracker()
        if tracker is None:
            self.available = False
            return
        try:  # stages already running belong to someone else (e.g. the live stream)
            self._baseline = set(tracker.getActiveStageIds())
        except Exception:
            self._baseline = set()

    def _tracker(self) -> Any:
        try:
            return self.spark.sparkContext.statusTracker()
        except Exception:  # Spark Connect, or a stopped session
            return None

    def poll(self) -> list[StageProgress]:
        """Refresh: active stages are updated, stages that left the active set are done."""
        if not self.available:
            return []
        tracker = self._tracker()
        if tracker is None:
            return list(self.stages.values())
        try:
            active = [s for s in tracker.getActiveStageIds() if s not in self._baseline]
            self.jobs_seen.update(tracker.getActiveJobsIds())
            for stage_id in active:
                info = tracker.getStageInfo(stage_id)
                if info is None:
                    continue
                self.stages[stage_id] = StageProgress(
                    stage_id=stage_id,
                    name=_short(info.name),
                    tasks=info.numTasks,
                    active=info.numActiveTasks,
                    completed=info.numCompletedTasks,
                    failed=info.numFailedTasks,
                    done=False,
                )
            for stage_id, stage in list(self.stages.items()):
                if stage_id not in active and not stage.done:
                    self.stages[stage_id] = StageProgress(
                        stage.stage_id,
                        stage.name,
                        stage.tasks,
                        0,
                        max(stage.completed, stage.tasks - stage.failed),
                        stage.failed,
                        True,
                    )
        except Exception as exc:  # the tracker must never break the page
            log.debug("status tracker poll failed: %s", exc)
        return sorted(self.stages.values(), key=lambda s: s.stage_id)

    def totals(self) -> dict[str, int]:
        stages = list(self.stages.values())
        return {
            "jobs": len(self.jobs_seen),
            "stages": len(stages),
            "stages_done": sum(s.done for s in stages),
            "tasks": sum(s.tasks for s in stages),
            "tasks_done": sum(s.completed for s in stages),
            "tasks_active": sum(s.active for s in stages),
            "tasks_failed": sum(s.failed for s in stages),
        }

    def ui_url(self) -> str | None:
        try:
            return self.spark.sparkContext.uiWebUrl
        except Exception:
            return None


def _short(name: str, width: int = 70) -> str:
    """Stage names are call sites like 'save at NativeMethodAccessorImpl.java:0'."""
    name = (name or "").strip().splitlines()[0] if name else ""
    return name if len(name) <= width else name[: width - 3] + "..."


def stage_rows(stages: list[StageProgress], limit: int = 12) -> list[dict[str, object]]:
    """Rows for a table: running stages first, then the latest finished ones."""
    running = [s for s in stages if not s.done]
    finished = [s for s in stages if s.done][::-1]
    rows = []
    for s in (running + finished)[:limit]:
        rows.append(
            {
                "stage": s.stage_id,
                "state": "done" if s.done else "running",
                "tasks done": f"{s.completed}/{s.tasks}",
                "active": s.active,
                "failed": s.failed,
                "name": s.name,
            }
        )
    return rows
