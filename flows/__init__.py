"""Prefect flows: data, tokenize, train, evaluate, pipeline, bakeoff, ablation (deployments in prefect.yaml).

Importing the package prepares the process environment (Spark's Python, quiet telemetry, the local
services' URLs), so flows behave the same under ``tokenmill``, ``tokenmill serve`` and a plain
``prefect worker``.
"""

from tokenmill.core.env import prepare_environment

prepare_environment()
