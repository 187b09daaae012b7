"""Exit statuses and the one boundary where every program turns errors into them.

Each program's `main()` hands its body to `run_main`, which maps what escapes
it to one line on stderr (`prog: error: <what, naming the thing at fault>`)
and one exit status, as HTTPie's `raw_main` does. An error class says its own
status (`exit_status`); a traceback is a bug report, never a message.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable

from agent import AgentError


class ExitStatus(enum.IntEnum):
    """The exit statuses of every bastion-audit program (README: Exit statuses)."""

    SUCCESS = 0
    ERROR = 1  # an I/O error, named; audit-shell: an unexpected one
    BAD_INPUT = 2  # usage, configuration, an unusable data directory
    PARTIAL = 3  # done, but a corrupt shard was left out (named on stderr)
    # audit-shell: a request the bastion account does not serve (a command,
    # scp, sftp, no terminal, a refused token). The same number as PARTIAL:
    # not all that was asked was done.
    REFUSED = 3
    UNHEALTHY = 4  # audit-agent status: the agent is not running or not well
    # audit-export --verify: a broken link, a bad signature, a truncated record
    NOT_VERIFIED = 5
    CTRL_C = 130


def run_main(
    prog: str,
    body: Callable[[], int],
    *,
    ctrl_c_status: int = ExitStatus.CTRL_C,
    on_unexpected: Callable[[BaseException], str] | None = None,
) -> int:
    """Run `body`; every error it raises becomes a message and an exit status.

    `on_unexpected`: for a program that must never show a traceback (the
    login shell): it logs the error and returns the line to print.
    """
    try:
        return body()
    except KeyboardInterrupt:
        return ctrl_c_status
    except BrokenPipeError:
        # The reader went away (`| head`): not an error; keep Python quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitStatus.SUCCESS
    except AgentError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_status
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        print(f"{prog}: error: {e.strerror or e}{where}", file=sys.stderr)
        return ExitStatus.ERROR
    except SystemExit:
        raise
    except BaseException as e:
        if on_unexpected is None:
            raise
        print(f"{prog}: error: {on_unexpected(e)}", file=sys.stderr)
        return ExitStatus.ERROR
