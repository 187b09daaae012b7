"""audit-shell's configuration: its settings, the hosts and who may use them.

One TOML file (default /etc/bastion-audit/shell.toml), loaded into frozen
dataclasses. `[shell]` holds the settings; each `[[host]]` has a name,
address, port, group and its remote `[[host.account]]`s (a key file or a
password for sshpass); each `[[grant]]` lets bastion users or Unix groups use
hosts (by name, `@group` or `*`) as accounts (by name or `*`). Errors name the
file and the key at fault.
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import AgentError
from agent.config import DEFAULT_INTENTS_DIR, DEFAULT_RECORDINGS_DIR
from agent.locks import DEFAULT_LOCKS_DIR
from agent.toml_table import Where, absolute_path, check_value, read_toml, table
from tracer import Mode

DEFAULT_SHELL_CONFIG = Path("/etc/bastion-audit/shell.toml")
MAX_SECONDS = 30 * 86400  # no timeout of [shell] is longer


class TagStyle(enum.StrEnum):
    SETENV = "setenv"  # `-o SetEnv=AUDIT_SESSION=TAG`, any OpenSSH >= 7.8
    PATCHED = "patched"  # `-Z TAG` (the patched ssh, README)


class Backend(enum.StrEnum):
    SSH = "ssh"  # the ssh binary, traced by the agent's strace
    # audit-shell's own client, which records the session itself
    # (agent/shell/paramiko_relay.py)
    PARAMIKO = "paramiko"


# Names that reach an ssh command line: never an option, never a shell word.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
_ADDRESS_RE = re.compile(r"[A-Za-z0-9_.:\[\]%-]{1,253}")


class InventoryError(AgentError):
    """A shell configuration or inventory that cannot be used."""


@dataclass(frozen=True)
class Account:
    """A remote account on a host, and how the bastion logs into it."""

    name: str
    key_file: Path | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def auth(self) -> str:
        return "key" if self.key_file is not None else "password"


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int = 22
    group: str = "hosts"
    accounts: tuple[Account, ...] = ()
    backend: Backend | None = None  # this host's own choice; else [shell] backend


class TransferRight(enum.StrEnum):
    """Which file transfers a grant allows (README: file transfers)."""

    NONE = "none"
    UPLOAD = "upload"  # to the host
    DOWNLOAD = "download"  # from the host
    BOTH = "both"

    def allows(self, direction: str) -> bool:
        return self == TransferRight.BOTH or self == direction


DEFAULT_MAX_TRANSFER_BYTES = 1 << 30  # per file


@dataclass(frozen=True)
class Grant:
    """Who (bastion users, Unix groups) may use what (hosts, accounts)."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()  # names, "@group" or "*"
    accounts: frozenset[str] = frozenset()  # names or "*"
    transfers: TransferRight = TransferRight.NONE
    max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES

    def admits(self, user: str, user_groups: frozenset[str]) -> bool:
        return user in self.users or bool(self.groups & user_groups)

    def covers(self, host: Host, account: Account) -> bool:
        host_ok = bool({"*", host.name, "@" + host.group} & self.hosts)
        return host_ok and bool({"*", account.name} & self.accounts)


@dataclass(frozen=True)
class Target:
    """One line of the menu: an account on a host, and what its grants allow."""

    host: Host
    account: Account
    transfers: TransferRight = TransferRight.NONE
    max_transfer_bytes: int = 0  # per file

    @property
    def label(self) -> str:
        return f"{self.account.name}@{self.host.name}"


@dataclass(frozen=True)
class ShellSettings:
    intents_dir: Path = DEFAULT_INTENTS_DIR
    known_hosts: str = "~/.bastion-audit/known_hosts"  # ~ is the user's home
    ssh: Path = Path("/usr/bin/ssh")
    tag_style: TagStyle = TagStyle.SETENV
    sshpass: Path = Path("/usr/bin/sshpass")
    idle_timeout_s: float = 900.0  # 0: none
    max_session_s: float = 8 * 3600.0  # the whole bastion login; 0: none
    warn_before_s: float = 60.0
    audit_wait_s: float = 5.0  # wait this long for the agent's strace; 0: don't
    connect_timeout_s: float = 15.0
    title: str = "bastion"
    backend: Backend = Backend.SSH  # a [[host]] may choose its own
    recordings_dir: Path = DEFAULT_RECORDINGS_DIR  # the paramiko backend's spool
    recording_mode: Mode = Mode.STRICT  # paramiko: a recording that cannot be written
    # ends the session (strict) or leaves a gap in it (permissive)
    # The command rules (agent/rules.py), for deny where audit-shell relays;
    # missing: none.
    rules_file: Path = Path("/etc/bastion-audit/rules.toml")
    locks_dir: Path = DEFAULT_LOCKS_DIR  # the agent's lock files (agent/locks.py)


@dataclass(frozen=True)
class ShellConfig:
    path: Path
    settings: ShellSettings
    hosts: tuple[Host, ...]
    grants: tuple[Grant, ...]

    def targets_for(self, user: str, user_groups: frozenset[str]) -> list[Target]:
        """What `user` may reach, grouped and sorted as the menu shows it."""
        grants = [g for g in self.grants if g.admits(user, user_groups)]
        found = []
        for host in self.hosts:
            for account in host.accounts:
                covering = [g for g in grants if g.covers(host, account)]
                if covering:
                    found.append(_target(host, account, covering))
        return sorted(found, key=lambda t: (t.host.group, t.host.name, t.account.name))


def _target(host: Host, account: Account, grants: list[Grant]) -> Target:
    """The target with the widest transfer right its grants give, and the
    largest size limit among the grants that allow transfers at all."""
    rights = {g.transfers for g in grants} - {TransferRight.NONE}
    if not rights:
        return Target(host, account)
    if TransferRight.BOTH in rights or len(rights) == 2:
        right = TransferRight.BOTH
    else:
        (right,) = rights
    limit = max(g.max_transfer_bytes for g in grants if g.transfers != "none")
    return Target(host, account, right, limit)


def groups_of(user: str) -> frozenset[str]:
    """The Unix group names of `user` (primary and supplementary)."""
    try:
        gid = pwd.getpwnam(user).pw_gid
        gids = os.getgrouplist(user, gid)
    except (KeyError, OSError):
        return frozenset()
    names = set()
    for g in gids:
        try:
            names.add(grp.getgrgid(g).gr_name)
        except KeyError:
            continue
    return frozenset(names)


def load_shell_config(path: Path = DEFAULT_SHELL_CONFIG) -> ShellConfig:
    """Read and check the whole file; InventoryError names the file and key."""
    values = read_toml(path, InventoryError)
    config = parse_shell_config(values, path)
    has_passwords = any(a.password for h in config.hosts for a in h.accounts)
    try:
        readable = os.stat(path).st_mode & stat.S_IROTH
    except OSError as e:
        raise InventoryError(f"cannot read config file {path}: {e.strerror}") from e
    if has_passwords and readable:
        raise InventoryError(
            f"{path} holds passwords and everyone may read it (chmod o-r {path})"
        )
    return config


def parse_shell_config(values: Mapping[str, Any], path: Path) -> ShellConfig:
    """The checked configuration from parsed TOML (pure)."""
    where = Where(str(path), error_class=InventoryError)
    # [web] is audit-web's (agent/web_config.py), read from the same file.
    _only(values, {"shell", "host", "grant", "web"}, where)
    settings = _settings(values.get("shell", {}), where)
    hosts: list[Host] = []
    for i, raw in enumerate(_array(values.get("host", []), where.at("host"))):
        hosts.append(_host(raw, where.at(f"host[{i}]")))
    names = [h.name for h in hosts]
    for name in names:
        if names.count(name) > 1:
            raise InventoryError(f"{path}: host name {name!r} is used twice")
    grants = [
        _grant(raw, where.at(f"grant[{i}]"))
        for i, raw in enumerate(_array(values.get("grant", []), where.at("grant")))
    ]
    return ShellConfig(path, settings, tuple(hosts), tuple(grants))


def _only(values: Mapping[str, Any], allowed: set[str], where: Where) -> None:
    for key in values:
        if key not in allowed:
            raise where.at(key).error("is not a known key")


def _table(value: Any, where: Where) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error("must be a table")
    return value


def _array(value: Any, where: Where) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise where.error("must be an array of tables ([[...]])")
    return [_table(v, where) for v in value]


def _text(value: Any, where: Where, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise where.error("must be a non-empty string")
    if pattern is not None and not pattern.fullmatch(value):
        raise where.error(f"is not a valid name: {value!r}")
    return value


def _settings(values: Any, where: Where) -> ShellSettings:
    settings = table(
        ShellSettings, values, where.at("shell"), limits={"*": (0, MAX_SECONDS)}
    )
    if not (
        settings.known_hosts.startswith("~/")
        or Path(settings.known_hosts).is_absolute()
    ):
        raise where.at("shell.known_hosts").error("must start with ~/ or /")
    return settings


def _host(values: Mapping[str, Any], where: Where) -> Host:
    _only(values, {"name", "address", "port", "group", "account", "backend"}, where)
    name = _text(values.get("name"), where.at("name"), _NAME_RE)
    address = _text(values.get("address", name), where.at("address"), _ADDRESS_RE)
    if address.startswith("-"):
        raise where.at("address").error("must not start with '-'")
    port = values.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise where.at("port").error("must be a port number (1-65535)")
    group = _text(values.get("group", "hosts"), where.at("group"), _NAME_RE)
    accounts = tuple(
        _account(raw, where.at(f"account[{i}]"))
        for i, raw in enumerate(_array(values.get("account", []), where.at("account")))
    )
    if not accounts:
        raise where.error("has no [[host.account]]")
    backend = values.get("backend")
    if backend is not None:
        backend = check_value(Backend.SSH, backend, where.at("backend"))
    return Host(name, address, port, group, accounts, backend)


def _account(values: Mapping[str, Any], where: Where) -> Account:
    _only(values, {"name", "key_file", "password"}, where)
    name = _text(values.get("name"), where.at("name"), _ACCOUNT_RE)
    key_file = values.get("key_file")
    password = values.get("password")
    if (key_file is None) == (password is None):
        raise where.error("needs exactly one of key_file and password")
    if key_file is not None:
        return Account(name, key_file=absolute_path(key_file, where.at("key_file")))
    return Account(name, password=_text(password, where.at("password")))


def _grant(values: Mapping[str, Any], where: Where) -> Grant:
    _only(
        values,
        {"users", "groups", "hosts", "accounts", "transfers", "max_transfer_bytes"},
        where,
    )

    def names(key: str) -> frozenset[str]:
        value = values.get(key, [])
        if not isinstance(value, list) or not all(
            isinstance(v, str) and v for v in value
        ):
            raise where.at(key).error("must be a list of names")
        return frozenset(value)

    transfers = check_value(
        TransferRight.NONE, values.get("transfers", "none"), where.at("transfers")
    )
    limit = values.get("max_transfer_bytes", DEFAULT_MAX_TRANSFER_BYTES)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise where.at("max_transfer_bytes").error("must be a whole number > 0")
    grant = Grant(
        names("users"),
        names("groups"),
        names("hosts"),
        names("accounts"),
        transfers,
        limit,
    )
    if not (grant.users or grant.groups):
        raise where.error("names no users and no groups")
    if not grant.hosts or not grant.accounts:
        raise where.error('needs hosts and accounts (use ["*"] for all)')
    return grant
