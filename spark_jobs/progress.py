"""Progress lines for a running Spark job, from the driver's public status API.

``SparkProgressReporter`` polls ``SparkContext.statusTracker()`` on a daemon thread and logs, through the
``tokenmill.data`` logger, one line per active stage every ``interval`` seconds and one when a stage ends::

    spark: stage 20 (collect at clean.py:210) job 12: 7/19 tasks, 2 running, 15.0s
    spark: stage 20 (collect at clean.py:210) job 12: 19/19 tasks done, 21.1s

A poll costs a few calls per active stage (nothing proportional to the data). The status API has no record
counts, so the lines carry tasks only; the Spark UI (its URL is logged when the session starts) has the rest.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger("tokenmill.data")

#: Seconds between progress lines for a running stage; ``TOKENMILL_SPARK_PROGRESS_S`` overrides it.
DEFAULT_INTERVAL_S = 15.0
INTERVAL_ENV = "TOKENMILL_SPARK_PROGRESS_S"
#: The longest a stage's completion waits before it is logged (the poll period when the interval is longer).
MAX_POLL_S = 1.0


def progress_interval() -> float:
    """The interval from ``TOKENMILL_SPARK_PROGRESS_S`` (seconds, > 0), else ``DEFAULT_INTERVAL_S``."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        log.warning("spark: ignoring %s=%r (not a number of seconds)", INTERVAL_ENV, raw)
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def format_stage(stage: Any, elapsed_s: float, job_id: int | None = None, ended: bool = False) -> str:
    """One progress line from a ``SparkStageInfo``-like object (``stageId``, ``name``, ``numTasks``,
    ``numCompletedTasks``, ``numActiveTasks``, ``numFailedTasks``); ``ended``: the stage left the active set."""
    parts = [f"spark: stage {stage.stageId}"]
    name = short_name(stage.name)
    if name:
        parts.append(f"({name})")
    if job_id is not None:
        parts.append(f"job {job_id}")
    head = " ".join(parts)
    body = f"{stage.numCompletedTasks}/{stage.numTasks} tasks"
    if ended:
        body += " done" if stage.numTasks > 0 and stage.numCompletedTasks >= stage.numTasks else " (stage ended)"
    elif stage.numActiveTasks:
        body += f", {stage.numActiveTasks} running"
    if stage.numFailedTasks:
        body += f", {stage.numFailedTasks} failed"
    return f"{head}: {body}, {elapsed_s:.1f}s"


def short_name(name: str | None) -> str:
    """A stage name as Spark's call site gives it, shortened: ``collect at /a/b/clean.py:210`` → ``collect at
    clean.py:210``; a JVM call site (``count at NativeMethodAccessorImpl.java:0``) → ``count``; Spark's internal
    closures (``$anonfun$...``, broadcasts and adaptive query stages) → nothing."""
    if not name or name.startswith("$"):
        return ""
    op, sep, where = name.partition(" at ")
    if not sep:
        return name
    if ".java:" in where or ".scala:" in where:
        return op
    return f"{op} at {os.path.basename(where)}"


class SparkProgressReporter:
    """Logs Spark stage progress from a daemon thread on the driver: ``start()``/``stop()`` or ``with``."""

    def __init__(self, spark_context: Any, interval: float | None = None, logger: logging.Logger | None = None):
        self._sc = spark_context
        self.interval = float(interval) if interval is not None else progress_interval()
        self._poll_s = min(self.interval, MAX_POLL_S)
        self._log = logger or log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # stage id → [first seen (monotonic), last line logged (monotonic), job id]
        self._active: dict[int, list[Any]] = {}

    def start(self) -> SparkProgressReporter:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="tokenmill-spark-progress", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """End the thread, then log the stages that completed since its last poll."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=max(5.0, 2 * self._poll_s))
        self._safe_poll()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> SparkProgressReporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            if not self._safe_poll():
                return

    def _safe_poll(self) -> bool:
        """One poll; False (and quiet) once the context is gone, so the thread ends with the session."""
        if getattr(self._sc, "_jsc", None) is None:
            return False
        try:
            self.poll()
        except Exception as exc:  # a stopping SparkContext, a closed gateway: progress is never worth a failure
            self._log.debug("spark: progress poll failed: %s", exc)
            return False
        return True

    def poll(self, now: float | None = None) -> None:
        """Log due lines: a running stage every ``interval``, and once when a stage leaves the active set."""
        now = time.monotonic() if now is None else now
        tracker = self._sc.statusTracker()
        active = set(tracker.getActiveStageIds())
        new = active - self._active.keys()
        jobs = self._jobs_of(tracker, new) if new else {}
        for stage_id in sorted(new):
            # The first line comes one interval in: stages shorter than that stay quiet until they finish.
            self._active[stage_id] = [now, now, jobs.get(stage_id)]
        for stage_id in sorted(self._active.keys() - active):
            first, _, job_id = self._active.pop(stage_id)
            info = tracker.getStageInfo(stage_id)
            if info is not None:
                self._log.info(format_stage(info, now - first, job_id, ended=True))
        for stage_id in sorted(active - new):
            entry = self._active[stage_id]
            if now - entry[1] >= self.interval:
                info = tracker.getStageInfo(stage_id)
                if info is not None:
                    entry[1] = now
                    self._log.info(format_stage(info, now - entry[0], entry[2]))

    @staticmethod
    def _jobs_of(tracker: Any, stage_ids: set[int]) -> dict[int, int]:
        """Which active job each of ``stage_ids`` belongs to (only asked when new stages appear)."""
        owners: dict[int, int] = {}
        for job_id in tracker.getActiveJobsIds():
            job = tracker.getJobInfo(job_id)
            if job is None:
                continue
            for stage_id in job.stageIds:
                if stage_id in stage_ids:
                    owners.setdefault(int(stage_id), job_id)
        return owners
