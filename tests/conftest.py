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
