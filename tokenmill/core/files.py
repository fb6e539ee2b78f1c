"""File permissions: what tokenmill writes is readable as a plain ``open()`` would leave it (mode 0666 less
the umask, typically 0644), even where a library writes through a private 0600 temp file (safetensors)."""

from __future__ import annotations

from pathlib import Path

_DEFAULT_UMASK = 0o022


def current_umask() -> int:
    """The process umask, read from ``/proc/self/status`` (``os.umask`` can only be read by setting it, which
    races with other threads); 0o022 where that file has no ``Umask:`` line (not Linux, or before 4.7)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _DEFAULT_UMASK


def chmod_like_open(path: str | Path) -> Path:
    """Give ``path`` the mode ``open()`` would have given a new file: ``0o666 & ~umask``."""
    path = Path(path)
    path.chmod(0o666 & ~current_umask())
    return path
