"""Progress lines for a running Spark job, from the driver's public status API and monitoring REST API.

``SparkProgressReporter`` polls ``SparkContext.statusTracker()`` on a daemon thread and logs, through the
``tokenmill.data`` logger, one line per active stage every ``interval`` seconds and one when a stage ends::

    spark: stage 20 (collect at clean.py:210) job 12: 7/19 tasks, 2 running, 1,234,567 rows read, 15.0s
    spark: stage 20 (collect at clean.py:210) job 12: 19/19 tasks done, 3,400,512 rows read, 3,398,001 written, 21.1s

The status tracker has task counts only; the row counts come from Spark's monitoring REST API on the driver's UI
(``{uiWebUrl}/api/v1/applications/{appId}/stages/{stageId}?details=false``): rows read are the stage's input
records plus its shuffle-read records, rows written its output records plus its shuffle-write records (a part is
left out when it is zero). They count the stage's Spark rows: the data job's first stage reads the list of input
files, so its count is files, not documents. Spark adds a task's records to its stage when the task finishes, so a
running stage's counts cover its finished tasks only (a stage whose first tasks are still running shows no rows
yet); the line for an ended stage has the stage's totals. A poll costs a few status calls per active stage and one
HTTP request (2 s timeout) per line it logs, nothing proportional to the data. With the UI off
(``spark.ui.enabled=false``, as in the tests) or the request failing, the line has no rows part (the failure is
logged at debug level); after ``MAX_ROWS_FAILURES`` failures in a row the reporter stops asking. Progress never fails
a job.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("tokenmill.data")

#: Seconds between progress lines for a running stage; ``TOKENMILL_SPARK_PROGRESS_S`` overrides it.
DEFAULT_INTERVAL_S = 15.0
INTERVAL_ENV = "TOKENMILL_SPARK_PROGRESS_S"
#: The longest a stage's completion waits before it is logged (the poll period when the interval is longer).
MAX_POLL_S = 1.0
#: Seconds one request to the Spark UI's REST API may take (the first one, which warms the API up, gets twice that).
REST_TIMEOUT_S = 2.0
#: Failed REST requests in a row after which a reporter stops asking for row counts.
MAX_ROWS_FAILURES = 3
#: The stage fields (Spark's monitoring REST API, ``StageData``) that make the rows read and the rows written.
READ_FIELDS = ("inputRecords", "shuffleReadRecords")
WRITE_FIELDS = ("outputRecords", "shuffleWriteRecords")
#: The driver's UI is asked directly, never through an ``http_proxy`` from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def progress_interval() -> float:
    """The interval from ``TOKENMILL_SPARK_PROGRESS_S`` (seconds, > 0), else ``DEFAULT_INTERVAL_S``."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        log.warning("spark: ignoring %s=%r (not a number of seconds)", INTERVAL_ENV, raw)
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def format_stage(
    stage: Any,
    elapsed_s: float,
    job_id: int | None = None,
    ended: bool = False,
    rows: Mapping[str, Any] | None = None,
) -> str:
    """One progress line from a ``SparkStageInfo``-like object (``stageId``, ``name``, ``numTasks``,
    ``numCompletedTasks``, ``numActiveTasks``, ``numFailedTasks``); ``ended``: the stage left the active set;
    ``rows``: the stage's record counts from the REST API (see ``rows_part``), None when there are none."""
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
    counted = rows_part(rows) if rows else ""
    if counted:
        body += f", {counted}"
    return f"{head}: {body}, {elapsed_s:.1f}s"


def rows_part(rows: Mapping[str, Any]) -> str:
    """``1,234,567 rows read, 1,200,000 written`` from a REST API stage (``inputRecords``, ``outputRecords``,
    ``shuffleReadRecords``, ``shuffleWriteRecords``): read = input + shuffle read, written = output + shuffle
    write; a zero side is left out (``1,200,000 rows written``), and both zero give ``""``."""
    read = sum(int(rows.get(field) or 0) for field in READ_FIELDS)
    written = sum(int(rows.get(field) or 0) for field in WRITE_FIELDS)
    if read and written:
        return f"{read:,} {_rows_noun(read)} read, {written:,} written"
    if read:
        return f"{read:,} {_rows_noun(read)} read"
    if written:
        return f"{written:,} {_rows_noun(written)} written"
    return ""


def _rows_noun(n: int) -> str:
    return "row" if n == 1 else "rows"


def stage_rows(ui_url: str, app_id: str, stage_id: int, timeout: float = REST_TIMEOUT_S) -> dict[str, int] | None:
    """The record counts of ``stage_id``'s latest attempt, from one request to the driver UI's REST API
    (``details=false``: the stage's totals, not its tasks); None when Spark does not know the stage yet."""
    url = f"{ui_url.rstrip('/')}/api/v1/applications/{app_id}/stages/{int(stage_id)}?details=false"
    with _OPENER.open(url, timeout=timeout) as response:
        attempts = json.load(response)
    if not attempts:
        return None
    latest = max(attempts, key=lambda a: a.get("attemptId", 0))
    return {field: int(latest.get(field) or 0) for field in READ_FIELDS + WRITE_FIELDS}


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
        # Row counts come from the UI's REST API: off when the UI is (uiWebUrl None) or after repeated failures.
        ui_url = getattr(spark_context, "uiWebUrl", None)
        self._ui_url: str | None = ui_url if isinstance(ui_url, str) and ui_url else None
        self._rows_failures = 0

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
        self._warm_up_rows()
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
                self._log.info(format_stage(info, now - first, job_id, ended=True, rows=self._rows(stage_id)))
        for stage_id in sorted(active - new):
            entry = self._active[stage_id]
            if now - entry[1] >= self.interval:
                info = tracker.getStageInfo(stage_id)
                if info is not None:
                    entry[1] = now
                    self._log.info(format_stage(info, now - entry[0], entry[2], rows=self._rows(stage_id)))

    def _rows(self, stage_id: int) -> dict[str, int] | None:
        """The stage's record counts, or None (UI off, REST API given up on, or this request failed)."""
        if not self._ui_url or self._rows_failures >= MAX_ROWS_FAILURES:
            return None
        try:
            rows = stage_rows(self._ui_url, self._sc.applicationId, stage_id)
        except Exception as exc:  # a timeout, a refused connection, a proxy's HTML page: the line goes without rows
            self._rows_failures += 1
            self._log.debug("spark: no row counts for stage %s from %s: %s", stage_id, self._ui_url, exc)
            if self._rows_failures >= MAX_ROWS_FAILURES:
                self._log.debug(
                    "spark: %d REST requests failed in a row; progress lines go without rows", MAX_ROWS_FAILURES
                )
            return None
        self._rows_failures = 0
        return rows

    def _warm_up_rows(self) -> None:
        """One small request before the first poll: the UI's REST API loads on its first call (a second or more on a
        cold JVM), which would otherwise eat the first line's timeout."""
        if not self._ui_url:
            return
        try:
            with _OPENER.open(f"{self._ui_url.rstrip('/')}/api/v1/version", timeout=2 * REST_TIMEOUT_S):
                pass
        except Exception as exc:
            self._log.debug("spark: the UI's REST API did not answer at %s: %s", self._ui_url, exc)

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


def shuffle_bytes(sc) -> dict[str, Any]:
    """Shuffle bytes the context's stages wrote so far (as Spark counts them: serialized and compressed), in
    total and for the five biggest stages: ``{"write_bytes": n, "top_stages": [{"stage", "name", "bytes"}]}``.

    Read from the driver's status store (the Spark UI's data, kept with the UI off too) through the JVM; the
    store keeps the last ``spark.ui.retainedStages`` (1,000) stages. None of it is proportional to the data."""
    store = sc._jsc.sc().statusStore()
    stages = store.stageList(None, False, False, sc._gateway.new_array(sc._jvm.double, 0), None)
    rows = []
    for i in range(stages.length()):
        stage = stages.apply(i)
        rows.append({"stage": stage.stageId(), "name": short_name(stage.name()), "bytes": stage.shuffleWriteBytes()})
    top = sorted(rows, key=lambda r: -r["bytes"])[:5]
    return {"write_bytes": sum(r["bytes"] for r in rows), "top_stages": [r for r in top if r["bytes"]]}
