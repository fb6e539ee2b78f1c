"""PySpark jobs that turn raw crawls into clean Parquet shards."""
