"""audit-shell's own ssh client (paramiko): connected with the host's account.

The paramiko backend's terminal sessions (agent/shell/paramiko_relay.py) and
the file transfers (agent/shell/transfers.py) open their connections here,
with the same host key rules as the ssh binary gets from audit-shell
(StrictHostKeyChecking=accept-new against the user's managed known_hosts,
and /etc/ssh/ssh_known_hosts pinned by an administrator, read only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from agent import AgentError
from agent.inventory import ShellSettings, Target

if TYPE_CHECKING:
    import paramiko

SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


class ConnectError(AgentError):
    """The host could not be reached or logged into; the message says why."""


class HostKeyChanged(ConnectError):
    """The host offered a key other than the one known for it."""


def quiet_paramiko() -> None:
    """paramiko logs through `logging`; with no handler, Python's last resort
    would print its warnings on the person's terminal. Errors reach the person
    as one line instead."""
    logger = logging.getLogger("paramiko")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False


def connect(
    settings: ShellSettings, target: Target, known_hosts: Path
) -> paramiko.SSHClient:
    """A connected, authenticated client; ConnectError says why not."""
    import paramiko  # only what connects with it needs it, and only then

    quiet_paramiko()
    host, account = target.host, target.account
    client = paramiko.SSHClient()
    try:
        if SYSTEM_KNOWN_HOSTS.exists():
            client.load_system_host_keys(str(SYSTEM_KNOWN_HOSTS))
        client.load_host_keys(str(known_hosts))
        # accept-new: AutoAddPolicy runs only for a host with no known key and
        # saves it; a key that differs from a known one raises
        # BadHostKeyException in connect(), which refuses the connection.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(
            host.address,
            port=host.port,
            username=account.name,
            key_filename=str(account.key_file) if account.key_file else None,
            password=account.password,
            look_for_keys=False,
            allow_agent=False,
            timeout=settings.connect_timeout_s,
            banner_timeout=settings.connect_timeout_s,
            auth_timeout=settings.connect_timeout_s,
        )
    except paramiko.BadHostKeyException as e:
        client.close()
        raise HostKeyChanged(
            f"the host key of {host.address}:{host.port} has changed; "
            "refusing to connect"
        ) from e
    except (TimeoutError, paramiko.SSHException, OSError) as e:
        client.close()
        raise ConnectError(f"cannot connect to {target.label}: {e}") from e
    return client
