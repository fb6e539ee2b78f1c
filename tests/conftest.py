"""Shared test set-up: the process environment tokenmill needs, before Prefect, MLflow or Spark load."""

from pathlib import Path

import pytest

from tokenmill.env import prepare_environment

prepare_environment()

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def prefect_harness():
    """A real, temporary Prefect API (SQLite) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def spark():
    """One small local SparkSession for the whole run (reused by jobs that call ``getOrCreate``)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("tokenmill-tests")
        .config("spark.driver.memory", "2g")
        # A short-lived test JVM: C1-only JIT and the serial GC halve start-up and first-query time.
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session


@pytest.fixture(scope="session")
def pipeline_run(prefect_harness, tmp_path_factory):
    """The real pretrain-pipeline flow (conf/tiny.yaml, GPT) on one file of the sample corpus, run once."""
    from flows.pipeline import pretrain_pipeline

    out = tmp_path_factory.mktemp("runs")
    return pretrain_pipeline(config_path=str(REPO_ROOT / "conf" / "tiny.yaml"),
                             overrides=[f"run.output_dir={out}",
                                        f"data.input={REPO_ROOT / 'data/sample/crawl-00001.warc.gz'}"])
