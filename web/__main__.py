"""audit-web: the sign-in page and the token redemption socket, one process.

audit-web [--config /etc/bastion-audit/shell.toml] [--listen HOST] [--port N]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from agent.escape import LogFormatter
from agent.exits import ExitStatus, run_main
from agent.inventory import DEFAULT_SHELL_CONFIG
from agent.version import add_version_option
from agent.web_config import load_web_config
from web import WebError
from web.redeem import Redeemer, RedeemServer
from web.site import SessionPurger, wsgi_application
from web.tokens import TokenStore

PROG = "audit-web"
WSGI_THREADS = 16  # the console's live views hold one each (web/live.py)


class _Stop(SystemExit):
    """SIGTERM or SIGINT: unwind the server loop into the cleanup.

    A SystemExit, because waitress's loop catches any other exception raised
    in a channel's handler as that channel's error (wasyncore.read: bare
    `except:`, re-raising only ExitNow, KeyboardInterrupt and SystemExit, and
    channel.handle_write: `except Exception`). A stop that came mid-request
    closed that one connection and the server went on (one stop in five
    under load, tests/test_web_stop.py). Its run() returns on SystemExit.
    """


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Sign-in page and one-time tokens for the web terminal."
    )
    add_version_option(parser)
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_SHELL_CONFIG,
        metavar="FILE",
        help=f"inventory and [web] settings (default {DEFAULT_SHELL_CONFIG})",
    )
    parser.add_argument("--listen", metavar="HOST", help="overrides web.listen_host")
    parser.add_argument("--port", type=int, help="overrides web.listen_port")
    return parser


def serve(args: argparse.Namespace) -> int:
    try:
        import django  # noqa: F401
        import pamela  # noqa: F401
        import waitress
    except ImportError as e:  # the agent's own install leaves them out
        raise WebError(
            f"{e.name} is missing: install bastion-audit[web] (make web does)"
        ) from e

    config = load_web_config(args.config)
    web = config.web
    tokens = TokenStore(
        web.state_dir / "tokens.sqlite",
        ttl_s=web.token_ttl_s,
        failures_max=web.failures_max,
        failure_window_s=web.failure_window_s,
    )
    app = wsgi_application(config, tokens)
    host = args.listen or web.listen_host
    port = web.listen_port if args.port is None else args.port
    stopped: list[str] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopped:  # a second signal must not cut the cleanup short
            stopped.append(signal.Signals(signum).name)
            raise _Stop(ExitStatus.SUCCESS)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with (
            SessionPurger(web.session_idle_s),
            RedeemServer(web.redeem_socket, Redeemer(config, tokens)),
        ):
            server = waitress.create_server(
                app, host=host, port=port, threads=WSGI_THREADS, ident=PROG
            )
            try:
                logging.info(
                    "listening on http://%s:%d/, tokens at %s",
                    host,
                    port,
                    web.redeem_socket,
                )
                server.run()  # returns on a _Stop (it catches SystemExit)
                if stopped:
                    logging.info("%s: stopping", stopped[0])
            finally:
                server.close()
    except _Stop:  # before the server ran, or during its cleanup
        logging.info("%s: stopping", stopped[0])
    finally:
        from web.console import console

        console().reader.close()  # the fleet store's connections, if any
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return ExitStatus.SUCCESS


def main(argv: list[str] | None = None) -> int:
    # One line per message: user names and addresses come from the web.
    handler = logging.StreamHandler()
    handler.setFormatter(LogFormatter(f"{PROG}: %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    return run_main(PROG, lambda: serve(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
