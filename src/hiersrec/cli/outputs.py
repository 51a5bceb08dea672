"""Output paths checked before any work starts: a long evaluation must not fail on its last line."""

from __future__ import annotations

from pathlib import Path

from hiersrec.errors import ConfigError


def checked_output(path: Path | None, option: str) -> Path | None:
    """``path`` when a file can be written there (its folder is created now); None passes through.

    Raises:
        ConfigError: ``path`` is a folder, or one of its parents is a file.
    """
    if path is None:
        return None
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{option} {path}: {parent} is a file, not a folder")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{option} {path}: cannot create its folder ({error.strerror})") from None
    return path
