"""audit-shell, the bastion user's login shell: the host menu, the relays (ssh
in a pty, or paramiko recording itself), the web terminal's token login.

It runs as the bastion user at every login, so it imports only the shared core
and the light parts of tracer/: never the daemon, the tools, the terminal
parser (pyte) or the store writer (tinydb).
"""

from agent import AgentError
from agent.exits import ExitStatus


class ShellError(AgentError):
    """audit-shell cannot serve this login."""


class Refused(ShellError):
    """A request the bastion account does not serve."""

    exit_status = ExitStatus.REFUSED
