"""Keeping a copy of a file the agent could not use, for a person to look at."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


def quarantine(path: Path, quarantine_dir: Path, *, move: bool) -> Path:
    """Move or copy `path` into `quarantine_dir` (root only); the new path."""
    quarantine_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(quarantine_dir, 0o700)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = quarantine_dir / f"{path.name}.{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = quarantine_dir / f"{path.name}.{stamp}.{n}"
    if move:
        os.replace(path, target)
    else:
        shutil.copyfile(path, target)
    os.chmod(target, 0o600)  # a session log holds everything its user typed
    return target
