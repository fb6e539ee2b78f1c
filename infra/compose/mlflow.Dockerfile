# MLflow tracking server with the two drivers the official image leaves out: psycopg2 for the
# Postgres backend store and boto3 for the S3 (MinIO) artifact store.
# Keep the server's minor version equal to the clients' (mlflow in requirements/constraints.txt).
FROM ghcr.io/mlflow/mlflow:v3.17.0
RUN pip install --no-cache-dir psycopg2-binary==2.9.13 boto3==1.44.5
