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
import re
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


# ----------------------------------------------------------------------------- run progress


STEP_STATES = ("done", "failed", "running", "waiting")


def step_history(runs: Any, latest: int = 5) -> tuple[dict[str, float], float]:
    """(median seconds per step over its latest successful runs, concurrency of those runs).

    From gold.pipeline_runs (a pandas frame). Concurrency = the steps' summed
    seconds / the runs' wall-clock seconds (1.0 when steps ran one at a time,
    higher since independent steps overlap), so summed step estimates can be
    turned into wall-clock time.
    """
    if runs is None or len(runs) == 0:
        return {}, 1.0
    frame = runs[runs["status"] == "succeeded"].copy()
    if frame.empty:
        return {}, 1.0
    frame["seconds"] = (frame["finished_at"] - frame["started_at"]).dt.total_seconds()
    frame = frame.sort_values("started_at")
    medians = frame.groupby("step")["seconds"].apply(lambda s: float(s.tail(latest).median()))
    recent = frame[frame["run_id"].isin(frame["run_id"].drop_duplicates().tail(latest))]
    per_run = recent.groupby("run_id").agg(
        work=("seconds", "sum"), start=("started_at", "min"), end=("finished_at", "max")
    )
    wall = (per_run["end"] - per_run["start"]).dt.total_seconds()
    ratio = (per_run["work"] / wall.where(wall > 0)).dropna()
    concurrency = float(ratio.median()) if len(ratio) else 1.0
    return medians.to_dict(), max(concurrency, 1.0)


@dataclass
class RunView:
    """What a person wants to know about a run in progress."""

    states: dict[str, str]  # step -> done | failed | running | waiting
    running: dict[str, float]  # step -> seconds since it started
    fraction: float  # 0..1, weighted by the steps' usual durations
    elapsed: float
    remaining: float | None  # seconds, None without history
    finished: bool
    rows_written: int = 0  # rows the finished steps left in their tables

    @property
    def done(self) -> int:
        return sum(state in ("done", "failed") for state in self.states.values())

    def headline(self) -> str:
        from pipeline.formats import duration

        parts = []
        if self.running:
            names = ", ".join(sorted(self.running))
            parts.append(f"Running {names}")
        elif not self.finished:
            parts.append("Starting")
        parts.append(f"{self.done}/{len(self.states)} steps done")
        if self.rows_written:
            parts.append(f"{self.rows_written:,} rows written so far")
        parts.append(f"{self.fraction * 100:.0f} %")
        parts.append(f"{duration(self.elapsed)} elapsed")
        if not self.finished:
            parts.append(
                f"about {duration(self.remaining)} left"
                if self.remaining is not None
                else "no estimate yet (first run)"
            )
        return " · ".join(parts)

    def rows(self, expected: dict[str, float]) -> list[dict[str, object]]:
        from pipeline.formats import duration

        order = {state: i for i, state in enumerate(("running", "failed", "waiting", "done"))}
        out = []
        for step, state in sorted(self.states.items(), key=lambda kv: order[kv[1]]):
            out.append(
                {
                    "Step": step,
                    "State": state,
                    "Running for": duration(self.running.get(step)),
                    "Usually takes": duration(expected.get(step)),
                }
            )
        return out


def run_view(
    steps: list[str],
    events: list[tuple[float, str, float]],
    started_at: float,
    now: float,
    expected: dict[str, float],
    concurrency: float = 1.0,
    finished: bool = False,
) -> RunView:
    """Replay the runner's progress messages: "<step> ..." starts a step, "<step> <status>"
    ends it (" · N rows" after a success: the rows so far are their sum).

    Several steps may run at once (pipeline.runner); the overall fraction
    weighs each step by its usual duration (1 s for a step never seen), a
    running step counting up to 95 % of it; the estimate is the remaining
    usual work divided by the concurrency observed in earlier runs.
    """
    states = dict.fromkeys(steps, "waiting")
    began: dict[str, float] = {}
    rows: dict[str, int] = {}
    for moment, message, _ in events:
        name, _, rest = message.partition(" ")
        if name not in states:
            continue
        status, _, detail = rest.partition(" · ")
        if status == "...":
            states[name] = "running"
            began[name] = moment
        elif status:
            states[name] = "failed" if status == "failed" else "done"
            written = re.fullmatch(r"([\d,]+) rows", detail.strip())
            if written:
                rows[name] = int(written.group(1).replace(",", ""))
    known = [expected[s] for s in steps if s in expected]
    default = float(sorted(known)[len(known) // 2]) if known else 1.0
    weight = {s: max(expected.get(s, default), 0.1) for s in steps}
    total = sum(weight.values()) or 1.0
    running = {s: now - began[s] for s in steps if states[s] == "running" and s in began}
    work_done = sum(weight[s] for s in steps if states[s] in ("done", "failed"))
    work_done += sum(min(seconds, 0.95 * weight[s]) for s, seconds in running.items())
    fraction = 1.0 if finished else min(work_done / total, 0.99)
    remaining = None
    if expected:
        remaining = max(total - work_done, 0.0) / max(concurrency, 1.0)
    return RunView(
        states, running, fraction, now - started_at, remaining, finished, sum(rows.values())
    )
