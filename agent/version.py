"""The version every program answers `--version` with, from the package's metadata."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

PACKAGE = "bastion-audit"


def version() -> str:
    """The installed bastion-audit's version ("unknown" when run from a bare tree)."""
    from importlib import metadata  # here: a login need not pay for it

    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """argparse's `version` action, with the version looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog} {version()}")  # on stdout, as argparse's own
        parser.exit()


def add_version_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", action=_VersionAction, help="print the version and exit"
    )
