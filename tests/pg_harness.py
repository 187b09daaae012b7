"""A PostgreSQL 15 of our own for the fleet tests and bench/fleet.py.

Debian's postgresql-15 binaries, a cluster made by initdb in a temporary
directory owned by a throwaway account (postgres refuses to run as root),
listening on a unix socket in that directory and on 127.0.0.1 at a free port;
never the machine's own cluster. The superuser logs in with a password over
TCP (scram-sha-256), so a refused password is a real refusal.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import free_port, wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE = "audit"
START_TIMEOUT_S = 30


@dataclass
class PgServer:
    owner: str  # the OS account the cluster runs as, also its superuser
    password: str
    port: int
    root: Path  # the owner's directory: data/, the socket, the log

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dsn(self, user: str | None = None, database: str = DATABASE) -> str:
        return f"postgresql://{user or self.owner}@127.0.0.1:{self.port}/{database}"

    def connect(self, autocommit: bool = True, database: str = DATABASE) -> Any:
        """A superuser connection over the unix socket."""
        import psycopg

        return psycopg.connect(
            host=str(self.root),
            port=self.port,
            user=self.owner,
            dbname=database,
            autocommit=autocommit,
        )

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                self.owner,
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "postgres.log"),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                *args,
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def add_agent_role(self, role: str, password: str, bastion: str) -> None:
        """A login role for one bastion's agent (README: the fleet's roles)."""
        self._create_role(role, password, "bastion_audit_agent")
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO fleet_agents (role, bastion) VALUES (%s, %s)",
                (role, bastion),
            )

    def add_auditor_role(self, role: str, password: str) -> None:
        self._create_role(role, password, "bastion_audit_auditor")

    def _create_role(self, role: str, password: str, group: str) -> None:
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                    sql.Identifier(role), sql.Literal(password), sql.Identifier(group)
                )
            )


@contextlib.contextmanager
def postgres() -> Iterator[PgServer]:
    """initdb, start, create the database; stop and remove it all after."""
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError("postgresql-15 is not installed (make test installs it)")
    owner = f"batpg{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(16)
    root = Path(f"/tmp/{owner}")
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", owner],
        check=True,
    )
    try:
        entry = pwd.getpwnam(owner)
        root.mkdir(mode=0o700)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                "runuser",
                "-u",
                owner,
                "--",
                str(PG_BIN / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                owner,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
        )
        pwfile.unlink()
        port = free_port()
        with open(root / "data" / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 100\nshared_buffers = 128MB\n"
            )
        server = PgServer(owner, password, port, root)
        server.start()
        try:
            wait_for(lambda: _ready(server), timeout=START_TIMEOUT_S)
            subprocess.run(
                [
                    str(PG_BIN / "createdb"),
                    "-h",
                    str(root),
                    "-p",
                    str(port),
                    "-U",
                    owner,
                    DATABASE,
                ],
                check=True,
                capture_output=True,
            )
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                server.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["userdel", "-f", owner], check=False, capture_output=True)


def _ready(server: PgServer) -> bool:
    result = subprocess.run(
        [str(PG_BIN / "pg_isready"), "-h", str(server.root), "-p", str(server.port)],
        capture_output=True,
    )
    return result.returncode == 0
