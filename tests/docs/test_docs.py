"""The README and the pages in ``docs/`` (and the infra and bench READMEs) against the code they describe.

No prose is asserted here. What is checked is what a reader would run or follow: every link leads to a file (and
heading) that exists, every repository path named in code exists, every ``tokenmill`` command in a code block parses
with tokenmill's own CLI and its ``--config``/``--set`` resolve as ``tokenmill config`` resolves them, every
``prefect`` command parses with Prefect's CLI, and every ``python -m`` module can be imported.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "infra" / "README.md",
    REPO / "infra" / "deepspeed" / "README.md",
    REPO / "bench" / "README.md",
]
IDS = [str(p.relative_to(REPO)) for p in PAGES]

FENCE = re.compile(r"^ *```[^\n]*\n(.*?)^ *```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SPAN = re.compile(r"`([^`\n]+)`")
# Repository paths as the pages write them: a top-level folder of this repository, then a path.
REPO_PATH = re.compile(
    r"^(?:conf|infra|bench|docs|flows|training|spark_jobs|tokenmill|tests|requirements|data/sample)"
    r"/[\w./-]*$"
)
MODULE = re.compile(r"(?:^|\s)(?:-m|--module)\s+([A-Za-z_][\w.]*)")


def code_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def code_lines(text: str) -> list[str]:
    """The commands of the fenced blocks: continuation lines joined, comment-only lines dropped."""
    lines = []
    for block in code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.strip().startswith("#"):
                lines.append(line.strip())
    return lines


def spans(text: str) -> list[str]:
    """Inline code spans outside the fenced blocks."""
    return SPAN.findall(FENCE.sub("", text))


def commands(text: str, program: str, inline: bool = False) -> list[list[str]]:
    """Every call of ``program`` (bare or as ``.venv/bin/<program>``), as its argument list."""
    found = []
    for line in code_lines(text) + [s for s in (spans(text) if inline else []) if s.split()[0] == program]:
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words and words[0] in (program, f".venv/bin/{program}"):
                found.append(words[1:])
    return found


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {
        re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        for m in re.finditer(r"^#+\s+(.*)$", text, re.MULTILINE)
    }


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_links_lead_to_files_and_headings_that_exist(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            assert anchor in heading_anchors(dest), f"{page.name}: link to {target}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_repository_paths_in_code_exist(page):
    text = page.read_text(encoding="utf-8")
    words = [w for chunk in code_blocks(text) + spans(text) for w in chunk.split()]
    named = {w.strip("()[],;:'\"") for w in words}
    named = {w for w in named if REPO_PATH.match(w) and not re.search(r"[*{<]|\.\.", w)}
    missing = sorted(w for w in named if not (REPO / w).exists())
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_python_modules_named_exist(page):
    text = page.read_text(encoding="utf-8")
    modules = {m for chunk in code_blocks(text) + spans(text) for m in MODULE.findall(chunk)}
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert not missing, f"{page.name}: python -m of modules that do not exist: {missing}"


def _tokenmill_calls() -> list[tuple[str, list[str]]]:
    return [
        (str(p.relative_to(REPO)), argv) for p in PAGES for argv in commands(p.read_text(encoding="utf-8"), "tokenmill")
    ]


def test_the_pages_have_tokenmill_commands():
    pages = {page for page, _ in _tokenmill_calls()}
    for page in ("README.md", "docs/models.md", "docs/training.md", "docs/operations.md", "docs/bakeoff.md"):
        assert page in pages, page


@pytest.mark.parametrize("page,argv", _tokenmill_calls(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_tokenmill_commands_parse_and_their_config_resolves(page, argv, monkeypatch, capsys):
    """``…`` stands for "the options of the line before": dropped where it stands for them, kept as a value."""
    from tokenmill.cli import build_parser, main

    argv = [w for i, w in enumerate(argv) if not (w == "…" and i == 1)]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:  # pragma: no cover - argparse printed why
        pytest.fail(f"{page}: tokenmill {' '.join(argv)} does not parse: {capsys.readouterr().err}")
    if not hasattr(args, "overrides"):
        return
    config = ["--config", args.config] if args.config else []
    overrides = [w for item in args.overrides for w in ("--set", item)]
    monkeypatch.chdir(REPO)  # the pages run their commands from the repository root
    code = main(["config", *config, *overrides])
    assert code == 0, f"{page}: tokenmill {' '.join(argv)}: {capsys.readouterr().err}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_prefect_commands_parse_with_prefects_cli(page):
    from prefect.cli._app import _app as prefect_cli

    for argv in commands(page.read_text(encoding="utf-8"), "prefect", inline=True):
        _, root, _ = prefect_cli.meta.parse_args(argv)  # global options (--no-prompt) first, as the entry point
        prefect_cli.parse_args(list(root.arguments.get("tokens", ())))
