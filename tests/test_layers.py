"""The floors of the code base: imports only point down.

    roof      tokenmill.flows, tokenmill.cli, tokenmill.services, tokenmill.resolve   (may import anything below)
    stages    tokenmill.spark_jobs, tokenmill.training                               (the core, and themselves)
    core      tokenmill.core                                                         (only itself)

Every import is counted, also those inside functions: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The folders the package is made of (tokenmill/flows etc. are links to the top-level folders).
SOURCES = {
    "tokenmill": "tokenmill",
    "flows": "tokenmill.flows",
    "spark_jobs": "tokenmill.spark_jobs",
    "training": "tokenmill.training",
}
FLOOR = {"tokenmill.core": 0, "tokenmill.spark_jobs": 1, "tokenmill.training": 1}  # everything else: the roof
OWN_NAMES = ("training", "flows", "spark_jobs")


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in SOURCES.items():
        for path in sorted((REPO / folder).rglob("*.py")):  # rglob does not follow the links
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join([package, *parts])
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[int, str]]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            found.append((node.lineno, target))
    return found


def _floor(module: str) -> tuple[str, int] | None:
    """(unit, floor) of a tokenmill module; None for third-party modules."""
    if module != "tokenmill" and not module.startswith("tokenmill."):
        return None
    for unit, floor in FLOOR.items():
        if module == unit or module.startswith(unit + "."):
            return unit, floor
    return module, 2


MODULES = _modules()


def test_every_source_folder_is_found():
    assert {
        "tokenmill.core.config",
        "tokenmill.spark_jobs.registry",
        "tokenmill.training.train",
        "tokenmill.flows.pipeline",
        "tokenmill.cli",
    } <= set(MODULES)


@pytest.mark.parametrize("floor_name", ["tokenmill.core", "tokenmill.spark_jobs", "tokenmill.training"])
def test_imports_point_down(floor_name):
    up = []
    for name, path in MODULES.items():
        here = _floor(name)
        if here[0] != floor_name:
            continue
        for line, target in _imports(name, path):
            there = _floor(target)
            if there is None or there[0] == here[0]:
                continue
            if there[1] >= here[1]:  # the roof, or a stage importing the other stage
                up.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert up == [], "imports that point up or sideways:\n" + "\n".join(up)


def test_nothing_imports_the_folders_by_their_bare_names():
    """``training``, ``flows`` and ``spark_jobs`` are not installed as such: only ``tokenmill.*`` is."""
    files = [*MODULES.values(), *(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py")]
    bare = [
        f"{path.relative_to(REPO)}:{line} imports {target}"
        for path in files
        for line, target in _imports("x.y", path)
        if target.split(".")[0] in OWN_NAMES
    ]
    assert bare == []


def test_the_floor_checker_sees_an_upward_import(tmp_path):
    """The check above can fail: a core module importing a stage is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tokenmill.spark_jobs.registry import STEPS\n")
    targets = [t for _, t in _imports("tokenmill.core.bad", bad)]
    assert targets == ["tokenmill.spark_jobs.registry"]
    assert _floor(targets[0])[1] > _floor("tokenmill.core.bad")[1]
