"""bastion-audit's shared core, and its programs' rooms.

agent/ itself holds what every program shares: the records, the
configuration files, the on-disk formats (store shards, casts, spools, the
status file, connection records) and the store's reader. It imports no
program. The programs live apart, by privilege:

- agent/daemon/  `audit-agent run` (root): ingest, store writer, recorder...
- agent/tools/   the operators' read-only command-line tools
- agent/shell/   `audit-shell`, the bastion user's login shell
- web/           audit-web, its own account

tests/test_layout.py holds the tree to that.
"""

# Not from agent.exits: that module imports this one.
_BAD_INPUT = 2


class AgentError(Exception):
    """Base class of bastion-audit's errors; programs print them as one line.

    `exit_status` is what run_main (agent/exits.py) exits with.
    """

    exit_status: int = _BAD_INPUT
