"""Spark progress lines (``spark_jobs/progress.py``) and the Spark UI line (``spark_jobs/session.py``)."""

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from tokenmill.spark_jobs.progress import (
    DEFAULT_INTERVAL_S,
    INTERVAL_ENV,
    MAX_ROWS_FAILURES,
    SparkProgressReporter,
    format_stage,
    progress_interval,
    rows_part,
    short_name,
    stage_rows,
)
from tokenmill.spark_jobs.session import ui_message


def _stage(**kw):
    base = dict(stageId=3, name="count at x.py:1", numTasks=8, numActiveTasks=2, numCompletedTasks=5, numFailedTasks=0)
    return SimpleNamespace(**{**base, **kw})


def test_format_running_stage():
    line = format_stage(_stage(), 12.34, job_id=1)
    assert line == "spark: stage 3 (count at x.py:1) job 1: 5/8 tasks, 2 running, 12.3s"


def test_format_ended_stage_and_failures():
    assert format_stage(_stage(numCompletedTasks=8, numActiveTasks=0), 2.0, ended=True) == (
        "spark: stage 3 (count at x.py:1): 8/8 tasks done, 2.0s"
    )
    line = format_stage(_stage(name="", numFailedTasks=1, numActiveTasks=0), 1.0, ended=True)
    assert line == "spark: stage 3: 5/8 tasks (stage ended), 1 failed, 1.0s"


def test_format_with_rows():
    rows = dict(inputRecords=1_234_567, shuffleReadRecords=0, outputRecords=0, shuffleWriteRecords=1_200_000)
    assert format_stage(_stage(), 15.0, job_id=12, rows=rows) == (
        "spark: stage 3 (count at x.py:1) job 12: 5/8 tasks, 2 running, 1,234,567 rows read, 1,200,000 written, 15.0s"
    )
    done = dict(inputRecords=0, shuffleReadRecords=40, outputRecords=0, shuffleWriteRecords=0)
    assert format_stage(_stage(numCompletedTasks=8, numActiveTasks=0), 2.0, ended=True, rows=done) == (
        "spark: stage 3 (count at x.py:1): 8/8 tasks done, 40 rows read, 2.0s"
    )
    # No finished task yet (all zero) or no counts at all: the line has tasks only.
    zeros = dict.fromkeys(rows, 0)
    assert (
        format_stage(_stage(), 1.0, rows=zeros)
        == format_stage(_stage(), 1.0)
        == ("spark: stage 3 (count at x.py:1): 5/8 tasks, 2 running, 1.0s")
    )


def test_rows_part_sums_input_and_shuffle():
    assert rows_part(dict(inputRecords=3, shuffleReadRecords=4, outputRecords=5, shuffleWriteRecords=6)) == (
        "7 rows read, 11 written"
    )
    assert rows_part(dict(outputRecords=1_000_000)) == "1,000,000 rows written"
    assert rows_part(dict(inputRecords=1)) == "1 row read"
    assert rows_part(dict(inputRecords=1, outputRecords=1)) == "1 row read, 1 written"
    assert rows_part({}) == ""


class _StageApi(BaseHTTPRequestHandler):
    """A stand-in for the driver UI's REST API: stage 7 has two attempts, other stages are unknown (404)."""

    paths: list[str] = []

    def do_GET(self):  # noqa: N802 (the http.server name)
        type(self).paths.append(self.path)
        if self.path == "/api/v1/version":
            body = {"spark": "4.0.0"}
        elif self.path.startswith("/api/v1/applications/local-1/stages/7?"):
            body = [
                dict(attemptId=1, inputRecords=10, shuffleReadRecords=0, outputRecords=0, shuffleWriteRecords=9),
                dict(attemptId=0, inputRecords=99, shuffleReadRecords=0, outputRecords=0, shuffleWriteRecords=0),
            ]
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stage_api():
    _StageApi.paths = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StageApi)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _fake_context(ui_url, stages):
    """A SparkContext stand-in whose status tracker reports ``stages`` (stage id → SparkStageInfo-like) as active."""
    active = dict(stages)
    tracker = SimpleNamespace(
        getActiveStageIds=lambda: list(active),
        getStageInfo=lambda stage_id: stages.get(stage_id),
        getActiveJobsIds=lambda: [4],
        getJobInfo=lambda job_id: SimpleNamespace(stageIds=list(stages)),
    )
    return SimpleNamespace(uiWebUrl=ui_url, applicationId="local-1", statusTracker=lambda: tracker), active


def test_stage_rows_asks_once_for_the_latest_attempt(stage_api):
    rows = stage_rows(stage_api, "local-1", 7)
    assert rows == dict(inputRecords=10, shuffleReadRecords=0, outputRecords=0, shuffleWriteRecords=9)
    assert _StageApi.paths == ["/api/v1/applications/local-1/stages/7?details=false"]  # the totals, not the tasks


def test_reporter_lines_carry_rows_from_the_rest_api(stage_api, caplog):
    sc, active = _fake_context(stage_api, {7: _stage(stageId=7)})
    reporter = SparkProgressReporter(sc, interval=1.0)
    with caplog.at_level(logging.INFO, logger="tokenmill.data"):
        reporter.poll(now=0.0)  # stage 7 appears
        reporter.poll(now=1.0)  # one interval in: a line
        active.clear()
        reporter.poll(now=2.0)  # it ended: a line
    lines = [r.getMessage() for r in caplog.records if r.name == "tokenmill.data"]
    assert lines == [
        "spark: stage 7 (count at x.py:1) job 4: 5/8 tasks, 2 running, 10 rows read, 9 written, 1.0s",
        "spark: stage 7 (count at x.py:1) job 4: 5/8 tasks (stage ended), 10 rows read, 9 written, 2.0s",
    ]
    assert len(_StageApi.paths) == 2  # one request per line


def test_reporter_without_ui_or_with_a_failing_api_logs_tasks_only(stage_api, caplog):
    # The UI is off: no request at all.
    sc, _ = _fake_context(None, {7: _stage(stageId=7)})
    reporter = SparkProgressReporter(sc, interval=1.0)
    with caplog.at_level(logging.DEBUG, logger="tokenmill.data"):
        reporter.poll(now=0.0)
        reporter.poll(now=1.0)
    assert [r.getMessage() for r in caplog.records] == [
        "spark: stage 7 (count at x.py:1) job 4: 5/8 tasks, 2 running, 1.0s"
    ]
    assert _StageApi.paths == []
    caplog.clear()

    # Stage 8 is unknown to the API (404): lines go without rows, and the reporter gives up after a few failures.
    sc, _ = _fake_context(stage_api, {8: _stage(stageId=8)})
    reporter = SparkProgressReporter(sc, interval=1.0)
    with caplog.at_level(logging.DEBUG, logger="tokenmill.data"):
        for now in range(MAX_ROWS_FAILURES + 3):
            reporter.poll(now=float(now))
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == MAX_ROWS_FAILURES + 2 and not any("rows" in line for line in info), info
    assert len(_StageApi.paths) == MAX_ROWS_FAILURES
    assert any(r.levelno == logging.DEBUG and "404" in r.getMessage() for r in caplog.records)


def test_short_stage_names():
    assert short_name("collect at /srv/app/tokenmill/spark_jobs/clean.py:210") == "collect at clean.py:210"
    assert short_name("count at NativeMethodAccessorImpl.java:0") == "count"
    assert short_name("$anonfun$withThreadLocalCaptured$1 at CompletableFuture.java:1768") == ""
    assert short_name("") == ""
    line = format_stage(_stage(name="count at NativeMethodAccessorImpl.java:0"), 1.0)
    assert line == "spark: stage 3 (count): 5/8 tasks, 2 running, 1.0s"


def test_interval_from_environment(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert progress_interval() == 2.5
    monkeypatch.setenv(INTERVAL_ENV, "soon")
    assert progress_interval() == DEFAULT_INTERVAL_S
    monkeypatch.delenv(INTERVAL_ENV)
    assert progress_interval() == DEFAULT_INTERVAL_S


def test_ui_message():
    assert ui_message("http://10.0.0.5:4040") == "spark: Spark UI at http://10.0.0.5:4040"
    assert "Spark UI off" in ui_message(None)


def test_progress_lines_from_a_running_job(spark, caplog):
    def slow(rows):
        for batch in rows:
            time.sleep(0.4)
            yield batch

    frame = spark.range(0, 800, numPartitions=1).repartition(8).mapInPandas(slow, "id long")
    reporter = SparkProgressReporter(spark.sparkContext, interval=0.2)
    with caplog.at_level(logging.INFO, logger="tokenmill.data"):
        with reporter:
            assert reporter.running
            assert frame.count() == 800
        assert not reporter.running
    lines = [r.getMessage() for r in caplog.records if r.name == "tokenmill.data"]
    progress = [line for line in lines if re.search(r"\d+/8 tasks", line)]
    assert progress, lines
    assert any(re.search(r"job \d+: [0-7]/8 tasks, \d+ running", line) for line in progress), progress
    assert any("8/8 tasks done" in line for line in progress), progress


def test_stop_ends_the_thread(spark):
    reporter = SparkProgressReporter(spark.sparkContext, interval=0.05).start()
    thread = reporter._thread
    assert thread.is_alive() and thread.daemon
    reporter.stop()
    assert not thread.is_alive()
    assert not reporter.running
    reporter.stop()  # a second stop is harmless


REPO_ROOT = Path(__file__).resolve().parents[2]

# Its own process: the shared test session runs with the Spark UI off, and row counts need the UI's REST API.
_REAL_JOB = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from tokenmill.spark_jobs.progress import SparkProgressReporter
from tokenmill.spark_jobs.session import spark_session

spark = spark_session("local[2]", "1g", app_name="tokenmill-progress-test", shuffle_partitions=2)

def slow(batches):  # about 0.5 s a partition (5 Arrow batches), so the stage runs across several polls
    for batch in batches:
        time.sleep(0.1)
        yield batch

with SparkProgressReporter(spark.sparkContext, interval=0.2):
    spark.range(0, 200000, numPartitions=4).mapInPandas(slow, "id long").write.parquet(sys.argv[1])
spark.stop()
"""


def test_a_real_local_job_logs_the_ui_and_rows_per_stage(tmp_path):
    # A short-lived JVM, as in conftest's session: C1-only JIT and the serial GC start it faster.
    java = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PYSPARK_SUBMIT_ARGS": f'--driver-java-options "{java}" pyspark-shell',
    }
    run = subprocess.run(
        [sys.executable, "-c", _REAL_JOB, str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert any(re.fullmatch(r"spark: Spark UI at http://\S+:\d+", line) for line in lines), lines  # local mode too
    progress = [line for line in lines if re.match(r"spark: stage \d+ \(parquet\) job \d+: ", line)]
    assert any(re.search(r": [0-3]/4 tasks, \d running", line) for line in progress), progress
    # The ended stage's line has the stage's totals: 200,000 rows in from range, 200,000 written to Parquet.
    assert any(
        re.search(r": 4/4 tasks done, 200,000 rows read, 200,000 written, \d+\.\ds$", line) for line in progress
    ), progress
