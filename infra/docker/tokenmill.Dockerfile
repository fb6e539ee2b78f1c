# The tokenmill image: what a flow run needs on a machine tokenmill did not set up. The Kubernetes work
# pool (infra/prefect/k8s-work-pool.json, default image tokenmill:0.1.0) runs `prefect flow-run execute`
# in it. Python 3.11, Java 17 for Spark, and the repository at /opt/tokenmill with the .venv that
# `make install` (the README's own set-up step) makes there.
#
#   docker build -f infra/docker/tokenmill.Dockerfile -t tokenmill:0.1.0 .     # from the repository root
#
# CPU torch by default. GPU nodes: --build-arg TORCH=<your CUDA torch requirement> and, for a wheel
# index of CUDA builds, --build-arg PIP_EXTRA_INDEX_URL=<that index>.
FROM python:3.11.14-slim-bookworm

# Spark 4 runs on Java 17 or 21; bookworm ships 17. procps: Spark's scripts call ps. make: `make install`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps make \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/tokenmill
# Only what `make install` reads first, so a code change does not reinstall torch and DeepSpeed.
COPY Makefile pyproject.toml ./
COPY requirements/ requirements/
ARG TORCH=torch==2.13.0
ARG PIP_EXTRA_INDEX_URL=
# The editable install maps the one top-level package, tokenmill, to its folder here; a stub stands in
# for the code, which lands there below (with its links to flows/, spark_jobs/ and training/).
RUN mkdir -p tokenmill && touch tokenmill/__init__.py \
 && make install PYTHON=python3.11 TORCH="$TORCH" \
 && rm -rf /root/.cache/pip
COPY . .

# prefect.yaml's pull step sets the working directory to {{ $PWD }}, resolved in the flow run's own
# environment when it starts; nothing sets PWD in a container started without a shell.
ENV PATH=/opt/tokenmill/.venv/bin:$PATH \
    PWD=/opt/tokenmill \
    PYTHONUNBUFFERED=1
CMD ["tokenmill", "--help"]
