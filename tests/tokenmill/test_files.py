"""tokenmill.core.files: written files get the mode a plain open() would give them."""

from __future__ import annotations

import os
import stat

import pytest

from tokenmill.core import files
from tokenmill.core.files import chmod_like_open, current_umask


@pytest.fixture
def umask(request):
    """Run the test under the umask ``request.param``, restoring the previous one after."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002], indirect=True)
def test_current_umask_is_the_process_umask(umask):
    assert current_umask() == umask


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)], indirect=["umask"])
def test_a_private_file_gets_the_mode_open_would_give(tmp_path, umask, expected):
    path = tmp_path / "f"
    path.touch(mode=0o600)
    assert chmod_like_open(path) == path
    assert mode(path) == expected
    path.with_name("plain").write_text("x")  # what open() gives under the same umask
    assert mode(path.with_name("plain")) == expected


def test_without_proc_the_umask_defaults_to_022(monkeypatch):
    real_open = open
    monkeypatch.setattr(files, "open", lambda p, *a, **k: real_open("/nonexistent/status"), raising=False)
    assert current_umask() == 0o022
