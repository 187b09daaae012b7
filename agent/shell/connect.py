"""Opening one connection: the tagged ssh's command line, or the paramiko backend.

Every way in (audit-shell's menu, the web terminal's --token-login) goes
through `open_session`, so each gets both backends: the ssh binary (traced by
the agent) or paramiko (recording itself).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import syslog
import time
from pathlib import Path

from agent.inventory import Backend, ShellSettings, TagStyle, Target
from agent.shell.paramiko_relay import run_paramiko
from agent.shell.relay import RelayResult, ShellSignals, Timers, run_in_pty

CHILD_PATH = "/usr/bin:/bin"
_TERM_RE = re.compile(r"[A-Za-z0-9._+-]{1,64}")


def new_tag(now: float | None = None) -> str:
    """A fresh session tag: `as-20261128T105300-1f2e3d4c`."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"as-{stamp}-{secrets.token_hex(4)}"


def ssh_command(
    settings: ShellSettings,
    target: Target,
    tag: str,
    known_hosts: Path,
    environ: dict[str, str],
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that open `target` with `tag` (pure).

    No ssh_config is read (-F /dev/null): a ProxyCommand or LocalCommand there
    would run a program nobody traces. The escape character is off, so `~C`
    cannot add forwardings from the bastion and `~^Z` cannot stop ssh.
    """
    host, account = target.host, target.account
    argv = [
        str(settings.ssh),
        "-F",
        "/dev/null",
        "-t",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "HashKnownHosts=no",
        "-o",
        "EscapeChar=none",
        "-o",
        "ClearAllForwardings=yes",
        "-o",
        "ForwardAgent=no",
        "-o",
        "ForwardX11=no",
        "-o",
        "PermitLocalCommand=no",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-o",
        f"ConnectTimeout={max(1, round(settings.connect_timeout_s))}",
        "-o",
        "LogLevel=ERROR",
    ]
    if settings.tag_style == TagStyle.PATCHED:
        argv += ["-Z", tag]
    else:
        argv += ["-o", f"SetEnv=AUDIT_SESSION={tag}"]
    env = {
        "PATH": CHILD_PATH,
        "HOME": environ.get("HOME", "/"),
        "USER": environ.get("USER", ""),
        "LOGNAME": environ.get("LOGNAME", ""),
        "LANG": "C.UTF-8",
    }
    term = environ.get("TERM", "")
    env["TERM"] = term if _TERM_RE.fullmatch(term) else "xterm"
    if account.key_file is not None:
        argv += [
            "-i",
            str(account.key_file),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
        ]
    else:
        argv += [
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "NumberOfPasswordPrompts=1",
        ]
        # sshpass -e: the password is in the child's environment only, which
        # only its own user and root can read; never on a command line.
        argv = [str(settings.sshpass), "-e", *argv]
        assert account.password is not None
        env["SSHPASS"] = account.password
    argv += ["-p", str(host.port), "-l", account.name, "--", host.address]
    return argv, env


def backend_of(settings: ShellSettings, target: Target) -> Backend:
    """The host's own choice, else the global one."""
    return target.host.backend or settings.backend


def open_session(
    settings: ShellSettings,
    target: Target,
    tag: str,
    known_hosts: Path,
    environ: dict[str, str],
    fd_in: int,
    fd_out: int,
    timers: Timers,
    signals: ShellSignals,
    proof: str = "",
) -> RelayResult:
    """Open the session with the host's backend and relay it to the end.

    `proof`: the secret of its connection record, for a paramiko recording.
    """
    if backend_of(settings, target) == Backend.PARAMIKO:
        return run_paramiko(
            settings,
            target,
            tag,
            known_hosts,
            environ,
            fd_in,
            fd_out,
            timers,
            signals,
            proof,
        )
    argv, env = ssh_command(settings, target, tag, known_hosts, environ)
    return run_in_pty(argv, env, fd_in, fd_out, timers, signals, settings.audit_wait_s)


def managed_known_hosts(setting: str, home: Path) -> Path:
    """The known_hosts file audit-shell keeps for this user, created 0600."""
    path = home / setting[2:] if setting.startswith("~/") else Path(setting)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    os.close(os.open(path, flags, 0o600))
    return path


def log_line(message: str) -> None:
    """One line to syslog (authpriv), next to sshd's own lines."""
    with contextlib.suppress(OSError):
        syslog.syslog(syslog.LOG_INFO, message)
