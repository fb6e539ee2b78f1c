"""Process environment every tokenmill entry point needs, set before Prefect, MLflow or Spark load.

Values already set by the user win (``setdefault``), so a real Prefect or MLflow server,
or a different Spark configuration folder, can be chosen from the shell. Otherwise the local
servers of ``tokenmill up`` are used when they are running, and the embedded modes when not.
"""

import os
import platform
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def prepare_environment() -> None:
    defaults = {
        # Nothing may phone home: only package registries are reachable from our machines.
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        # The embedded Prefect API needs more than its default 20 s to start on 2 cores.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        # Spark's Python workers must run this interpreter (the venv's), not the one on PATH.
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_CONF_DIR": str(REPO_ROOT / "infra" / "spark"),
        # JIT-built DeepSpeed ops use -march=native: cache them per CPU type.
        "TORCH_EXTENSIONS_DIR": str(REPO_ROOT / ".tokenmill" / "torch_extensions" / platform.machine()),
        "TOKENIZERS_PARALLELISM": "true",
        # Show the stages' own log lines in flow-run logs.
        "PREFECT_LOGGING_EXTRA_LOGGERS": "tokenmill",
        # ...and stay quiet when a stage runs outside a flow (tests, scripts).
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    # Servers started by `tokenmill up` for this project replace the embedded Prefect API and the
    # SQLite tracking store; without them (or with both variables set by the user) nothing is probed.
    if not (os.environ.get("PREFECT_API_URL") and os.environ.get("MLFLOW_TRACKING_URI")):
        from tokenmill.core.local_services import discover, services_home

        found = discover(services_home())
        if found:
            os.environ.setdefault("PREFECT_API_URL", found["prefect_api"])
            os.environ.setdefault("MLFLOW_TRACKING_URI", found["mlflow"])
