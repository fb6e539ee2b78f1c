"""Shared test set-up: the process environment tokenmill needs, before Prefect, MLflow or Spark load."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tokenmill.core.env import prepare_environment

# A developer's `tokenmill up` servers (or exported URLs) must never receive test runs: an empty
# services home and no service URLs, before prepare_environment looks for them.
_SERVICES_HOME = tempfile.mkdtemp(prefix="tokenmill-test-home-")
atexit.register(shutil.rmtree, _SERVICES_HOME, True)
os.environ["TOKENMILL_HOME"] = _SERVICES_HOME
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)

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
    """The real pipeline flow (conf/tiny.yaml, GPT) on one file of the sample corpus, run once."""
    from tokenmill.flows.pipeline import pipeline_flow

    out = tmp_path_factory.mktemp("runs")
    return pipeline_flow(
        config_path=str(REPO_ROOT / "conf" / "tiny.yaml"),
        overrides=[f"run.output_dir={out}", f"data.input={REPO_ROOT / 'data/sample/crawl-00001.warc.gz'}"],
    )
