"""Where a transfer goes: the virtual tree of granted hosts, and its paths.

Both transfer protocols (agent/shell/sftp_relay.py, agent/shell/scp_legacy.py)
name a file as `HOST/path`: the first component picks the host directory of
the tree (the host's name, or `account@host` where the person has several
accounts there), the rest is the path on the host (`~/x`: in the account's
home). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.inventory import Target


@dataclass(frozen=True, slots=True)
class Route:
    """A host directory of the virtual root."""

    label: str
    target: Target


def routes_for(targets: list[Target]) -> list[Route]:
    """One directory per transfer-granted target: the host name, or
    account@host where the person has several accounts on the host."""
    granted = [t for t in targets if t.transfers != "none"]
    hosts = [t.host.name for t in granted]
    return [
        Route(t.host.name if hosts.count(t.host.name) == 1 else t.label, t)
        for t in granted
    ]


def resolve(name: str, allow_up: bool) -> tuple[str | None, str | None] | str:
    """A client path as (host label or None for the root, the rest or None),
    or why it is refused. The client's working directory is the root.

    `..` only where the client resolves a path (REALPATH); anywhere else a
    path that climbs is refused, and so is any control character.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "control characters in a path are refused"
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not allow_up:
                return "a path with .. is refused"
            if parts:
                parts.pop()
            continue
        parts.append(part)
    if not parts:
        return None, None
    rest = "/".join(parts[1:])
    return parts[0], rest or None


def host_path(rest: str | None) -> str:
    """The host's path for the part after the host directory."""
    if rest is None:
        return "/"
    if rest == "~":
        return "."
    if rest.startswith("~/"):
        return rest[2:]
    return "/" + rest
