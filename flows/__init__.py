"""Prefect flows: orchestration only; the work runs in spark_jobs/ and training/."""
