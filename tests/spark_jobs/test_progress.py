"""Spark progress lines (``spark_jobs/progress.py``) and the Spark UI line (``spark_jobs/session.py``)."""

import logging
import re
import time
from types import SimpleNamespace

from tokenmill.spark_jobs.progress import (
    DEFAULT_INTERVAL_S,
    INTERVAL_ENV,
    SparkProgressReporter,
    format_stage,
    progress_interval,
    short_name,
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
