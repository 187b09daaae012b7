"""make web: what audit-web needs to start here, then audit-web in the foreground.

Right after make run there is no shell.toml and no web terminal account, and
audit-web stopped at the first of them. This makes what is missing, saying
so one line each: an example shell.toml (no hosts yet; etc/shell.toml), the
terminal account it names (a system account without a shell, as the README's
setup makes it), its state directory and its socket's directory. Then it
runs audit-web, as root, on 127.0.0.1: a trial. `make install WEB=1` sets it
up for good, as its own account under systemd.

    python -m scripts.web_trial --config FILE [--dry-run]
"""

from __future__ import annotations

import argparse
import os
import pwd
import subprocess
import sys
from pathlib import Path

from agent.config import DEFAULT_INTENTS_DIR
from agent.exits import ExitStatus, run_main
from agent.web_config import WebSettings, load_web_config

PROG = "make web"
REPO = Path(__file__).resolve().parents[1]


def example_config(path: Path) -> None:
    """etc/shell.toml with the defaults, or what the Makefile's variables say."""
    defaults = WebSettings()
    text = (REPO / "etc" / "shell.toml").read_text()
    for key, value in {
        "@INTENTS_DIR@": os.environ.get("INTENTS_DIR") or str(DEFAULT_INTENTS_DIR),
        "@WEB_STATE_DIR@": os.environ.get("WEB_STATE_DIR") or str(defaults.state_dir),
        "@TERM_USER@": os.environ.get("TERM_USER") or defaults.terminal_user,
        "@REDEEM_SOCKET@": os.environ.get("REDEEM_SOCKET")
        or str(defaults.redeem_socket),
        "@AGENT_CONFIG@": str(defaults.agent_config),
    }.items():
        text = text.replace(key, value)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f"{PROG}: wrote an example {path} (no hosts yet: add [[host]], [[grant]])")


def account(name: str) -> None:
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    subprocess.run(
        ["useradd", "--system", "--create-home", "--home-dir", f"/var/lib/{name}"]
        + ["--shell", "/usr/sbin/nologin", name],
        check=True,
    )
    print(f"{PROG}: made the web terminal's account {name} (no shell, no password)")


def directory(path: Path, mode: int, what: str) -> None:
    if not path.is_dir():
        path.mkdir(mode=mode, parents=True)
        print(f"{PROG}: made {what} {path}")


def prepare(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print(
            f"{PROG}: error: run as root (PAM checks other users' passwords; "
            "in production audit-web runs as its own account: make install WEB=1)",
            file=sys.stderr,
        )
        return ExitStatus.BAD_INPUT
    if not args.config.exists():
        example_config(args.config)
    web = load_web_config(args.config).web
    account(web.terminal_user)
    directory(web.state_dir, 0o700, "audit-web's state directory")
    directory(web.redeem_socket.parent, 0o755, "the token socket's directory")
    command = [str(Path(sys.executable).with_name("audit-web")), "--config"]
    command.append(str(args.config))
    if args.dry_run:
        print(" ".join(command))
        return ExitStatus.SUCCESS
    sys.stdout.flush()
    os.execv(command[0], command)
    return ExitStatus.ERROR  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    return run_main(PROG, lambda: prepare(args))


if __name__ == "__main__":
    sys.exit(main())
