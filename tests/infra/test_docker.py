"""``infra/docker/tokenmill.Dockerfile``, the image the Kubernetes work pool runs flow runs in.

No Docker here: the file is read for what would break the image or the runs in it: an unpinned base,
a set-up other than the README's ``make install``, a build context that copies a host ``.venv`` over
the image's, a working directory prefect.yaml's pull step would not find, a tag the pool does not name.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import yaml
from test_compose import from_images, is_pinned

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "infra" / "docker" / "tokenmill.Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
POOL = json.loads((REPO / "infra" / "prefect" / "k8s-work-pool.json").read_text())
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    )
    return [
        (m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.MULTILINE)
    ]


STEPS = instructions(DOCKERFILE)


def args(kind: str) -> list[str]:
    return [a for k, a in STEPS if k == kind]


def env() -> dict[str, str]:
    out = {}
    for a in args("ENV"):
        for word in shlex.split(a):
            key, _, value = word.partition("=")
            out[key] = value
    return out


def test_builds_on_a_pinned_python_of_the_projects_version():
    (base,) = from_images(DOCKERFILE)
    assert is_pinned(base), base
    minor = re.search(r">=\s*3\.(\d+)", PYPROJECT["project"]["requires-python"]).group(1)
    assert base.startswith(f"python:3.{minor}."), base
    make = (REPO / "Makefile").read_text()
    assert re.search(rf"^PYTHON \?= python3\.{minor}$", make, re.MULTILINE)


def test_sets_up_with_the_readmes_install_step_and_torch_first():
    runs = " ".join(args("RUN"))
    assert re.search(r"\bmake install PYTHON=python3\.\d+ TORCH=\"\$TORCH\"", runs), runs
    default_torch = re.search(r"^TORCH\s+\?=\s*(\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE).group(1)
    assert f"TORCH={default_torch}" in args("ARG")  # the same CPU build as a fresh clone gets
    assert "openjdk-17-jre-headless" in runs and "make" in runs.split()  # Spark's JVM, and make itself


def test_the_install_layer_sees_only_what_make_install_reads():
    copies = args("COPY")
    install = next(i for i, (k, a) in enumerate(STEPS) if k == "RUN" and "make install" in a)
    before = [a for k, a in STEPS[:install] if k == "COPY"]
    sources = [word for a in before for word in a.split()[:-1]]
    for src in sources:
        assert (REPO / src).exists(), src
    stamp_deps = re.search(r"^\$\(STAMP\):\s*(.+)$", (REPO / "Makefile").read_text(), re.MULTILINE).group(1).split()
    for dep in stamp_deps:  # what the install step's rule depends on is in the image before it runs
        assert any(dep == s or dep.startswith(s.rstrip("/") + "/") for s in sources), dep
    assert copies[-1] == ". ." and STEPS.index(("COPY", ". .")) > install  # the code comes after the venv


def test_editable_install_stubs_are_the_projects_top_level_packages():
    stub_run = next(a for a in args("RUN") if "__init__.py" in a)
    stubs = set(re.findall(r"touch (\w+)/__init__\.py", stub_run))
    packages = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert stubs == packages == {"tokenmill"}  # one name in site-packages; the stages are its subpackages
    for p in packages:
        assert (REPO / p / "__init__.py").is_file(), p  # the stub is overwritten by the real one


def test_build_context_leaves_host_state_out():
    ignored = {
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    }
    # a host .venv copied by `COPY . .` would replace the image's; runs and service stores are data
    assert {".git", "**/.venv", ".tokenmill", "runs"} <= ignored
    for entry in (REPO / ".gitignore").read_text().splitlines():
        entry = entry.strip()
        if entry and not entry.startswith("#"):  # anchored (/x) in .gitignore is x here; unanchored is **/x
            name = entry.strip("/")
            assert (name if entry.startswith("/") else f"**/{name}") in ignored, entry


def test_working_directory_is_where_prefect_yaml_pull_step_points():
    (workdir,) = args("WORKDIR")
    variables = env()
    assert variables["PWD"] == workdir
    assert variables["PATH"].startswith(f"{workdir}/.venv/bin:")  # prefect and tokenmill from the venv
    pull = yaml.safe_load((REPO / "prefect.yaml").read_text())["pull"]
    (step,) = pull
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $PWD }}"


def test_the_pool_runs_the_tag_the_dockerfile_documents():
    tag = re.search(r"docker build -f infra/docker/tokenmill\.Dockerfile -t (\S+) \.", DOCKERFILE.read_text()).group(1)
    assert tag == POOL["variables"]["properties"]["image"]["default"]
    assert tag == f"tokenmill:{PYPROJECT['project']['version']}"
