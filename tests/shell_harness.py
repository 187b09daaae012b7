"""A bastion for audit-shell tests: two sshds, three users, the agent, a spool.

The bastion sshd runs with the Match block that scripts/install-shell.sh
writes (`--print-block`), so the tests prove the installer's block. Files the
bastion user reads (its config, the target's key) live in a world-traversable
temp dir; everything is removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect

from tests import harness

INSTALLER = harness.REPO / "scripts" / "install-shell.sh"
TAG_RE = re.compile(rb"session (as-\d{8}T\d{6}-[0-9a-f]{8})")
MENU_FOOTER = b"Ctrl-D log out"
SFTP_SUBSYSTEM = "Subsystem sftp /usr/lib/openssh/sftp-server\n"


@dataclass
class Bastion:
    workdir: Path
    person: harness.TestUser  # logs into the bastion; audit-shell runs as them
    target_user: harness.TestUser  # the remote account on the target host
    target: harness.Sshd
    spool: Path
    target_key: Path  # the target's key, readable by `person`
    agent_config: Path
    audit_shell: Path  # see launcher()
    recordings: Path  # the paramiko backend's spool (mode 1733, like `spool`)

    def write_config(self, name: str, shell: str = "", hosts: str = "") -> Path:
        """An audit-shell config the person can read, 0640 root:<their group>."""
        path = self.workdir / name
        path.write_text(
            "[shell]\n"
            f'intents_dir = "{self.spool}"\n'
            f'recordings_dir = "{self.recordings}"\n'
            f"{shell}\n"
            f"{hosts or self.default_hosts()}"
        )
        os.chown(path, 0, pwd.getpwnam(self.person.name).pw_gid)
        path.chmod(0o640)
        return path

    def default_hosts(self) -> str:
        t = self.target_user.name
        return (
            f'[[host]]\nname = "web1"\naddress = "127.0.0.1"\n'
            f'port = {self.target.port}\ngroup = "web"\n'
            f'  [[host.account]]\n  name = "{t}"\n  key_file = "{self.target_key}"\n'
            f'[[host]]\nname = "db1"\naddress = "127.0.0.1"\n'
            f'port = {self.target.port}\ngroup = "databases"\n'
            f'  [[host.account]]\n  name = "{t}"\n'
            f'  password = "{self.target_user.password}"\n'
            f'[[host]]\nname = "secret1"\naddress = "127.0.0.1"\n'
            f'port = {self.target.port}\ngroup = "databases"\n'
            f'  [[host.account]]\n  name = "root"\n  key_file = "{self.target_key}"\n'
            f'[[grant]]\nusers = ["{self.person.name}"]\n'
            f'hosts = ["web1", "db1"]\naccounts = ["*"]\n'
        )


def launcher(workdir: Path, uid: int) -> Path:
    """An audit-shell the test users can run.

    The venv's interpreter may sit where other users cannot reach it (here:
    pyenv under /root, mode 0700), so the script runs the first interpreter
    of the same version that `uid` can execute, with the venv's packages and
    the checkout on its path.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    site = Path(sysconfig.get_paths()["purelib"])
    for interpreter in (os.path.realpath(sys.executable), f"/usr/bin/python{version}"):
        if _others_may_run(Path(interpreter)):
            break
    else:
        raise RuntimeError(f"no python{version} that uid {uid} may run")
    path = workdir / "audit-shell"
    path.write_text(
        f"#!{interpreter}\n"
        "import sys\n"
        f"sys.path[:0] = [{str(harness.REPO)!r}, {str(site)!r}]\n"
        "from agent.shell.main import main\n"
        "sys.exit(main())\n"
    )
    path.chmod(0o755)
    return path


def _others_may_run(path: Path) -> bool:
    """Whether a user with no special rights may execute `path`."""
    try:
        if os.stat(path).st_mode & 0o005 != 0o005:
            return False
        return all(os.stat(d).st_mode & 0o001 for d in path.parents)
    except OSError:
        return False


def match_block(user: str, config: Path, audit_shell: Path) -> str:
    """The installer's own sshd Match block for `user` and `config`."""
    result = subprocess.run(
        [
            str(INSTALLER),
            "--print-block",
            "--user",
            user,
            "--audit-shell",
            str(audit_shell),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@contextlib.contextmanager
def bastion() -> Iterator[Bastion]:
    """Users, the target sshd, the spool and the agent's config; not the agent."""
    workdir = Path(tempfile.mkdtemp(prefix="bastion-audit-shell."))
    try:
        workdir.chmod(0o755)
        with (
            harness.test_user(workdir, prefix="bsh") as person,
            harness.test_user(workdir, prefix="btg") as target_user,
            # Like any host's sshd: the sftp subsystem defined (file transfers).
            harness.sshd(workdir, SFTP_SUBSYSTEM) as target,
        ):
            spool = workdir / "spool"
            spool.mkdir()
            spool.chmod(0o1733)
            recordings = workdir / "recordings"
            recordings.mkdir()
            recordings.chmod(0o1733)
            key = workdir / "target_key"
            shutil.copy(target_user.key, key)
            os.chown(key, person.uid, -1)
            key.chmod(0o600)
            agent_config = workdir / "agent.toml"
            agent_config.write_text(
                f'intents_dir = "{spool}"\nrecordings_dir = "{recordings}"\n'
            )
            yield Bastion(
                workdir,
                person,
                target_user,
                target,
                spool,
                key,
                agent_config,
                launcher(workdir, person.uid),
                recordings,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def login(b: Bastion, server: harness.Sshd, *options: str) -> pexpect.spawn:
    """The person's ssh client, in a pty, logging into the bastion."""
    return harness.spawn_ssh(harness.ssh_argv(b.person, server, *options))


def run_as_person(
    b: Bastion, config: Path, *wrapper: str, dimensions: tuple[int, int] = (24, 100)
) -> pexpect.spawn:
    """audit-shell started directly (no sshd) as the person, in a real pty.

    `wrapper` runs before it (e.g. `prlimit --fsize=N`).
    """
    return pexpect.spawn(
        "setpriv",
        [
            f"--reuid={b.person.uid}",
            f"--regid={pwd.getpwnam(b.person.name).pw_gid}",
            "--init-groups",
            *wrapper,
            str(b.audit_shell),
            "--config",
            str(config),
        ],
        env={
            "PATH": "/usr/bin:/bin",
            "TERM": harness.SSH_TERM,
            "HOME": str(b.person.home),
            "USER": b.person.name,
            "LOGNAME": b.person.name,
        },
        dimensions=dimensions,
        timeout=30,
    )
