"""An upload through the bastion account beside scp straight to the target.

    sudo .venv/bin/python -m bench.transfer [--mb 100] [--rounds 3]

One run, one throwaway bastion sshd (audit-shell as its ForceCommand, the
agent storing the records) and target sshd; the same file uploaded, round by
round alternated:
- direct: scp to the target host itself (nothing audited);
- bastion sftp: scp through the bastion account (OpenSSH's default SFTP
  protocol; audit-shell's relay, agent/shell/sftp_relay.py);
- bastion scp -O: the original scp protocol (agent/shell/scp_legacy.py).
Prints the median wall time of each and its ratio to direct; every upload is
checked byte for byte on the target.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests import harness, shell_harness


def options(key: Path, known_hosts: Path, port: int) -> list[str]:
    return [
        "-P",
        str(port),
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "BatchMode=yes",
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-q",
    ]


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("transfer: error: run as root (sshd, users, agent)", file=sys.stderr)
        return 2
    with shell_harness.bastion() as b:
        t = b.target_user
        config = b.write_config(
            "bench.toml",
            hosts=(
                f'[[host]]\nname = "web1"\naddress = "127.0.0.1"\n'
                f"port = {b.target.port}\n"
                f'  [[host.account]]\n  name = "{t.name}"\n'
                f'  key_file = "{b.target_key}"\n'
                f'[[grant]]\nusers = ["{b.person.name}"]\nhosts = ["web1"]\n'
                f'accounts = ["*"]\ntransfers = "both"\n'
                f"max_transfer_bytes = {(args.mb + 1) << 20}\n"
            ),
        )
        block = shell_harness.match_block(b.person.name, config, b.audit_shell)
        payload = b.workdir / "payload.bin"
        with open(payload, "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))
        digest = hashlib.sha256(payload.read_bytes()).hexdigest()
        with (
            harness.sshd(b.workdir, shell_harness.SFTP_SUBSYSTEM + block) as bastion,
            harness.agent(b.workdir / "data", "--config", str(b.agent_config)),
        ):
            ways = {
                "direct": options(t.key, b.target.known_hosts, b.target.port)
                + [str(payload), f"{t.name}@127.0.0.1:direct.bin"],
                "bastion sftp": options(b.person.key, bastion.known_hosts, bastion.port)
                + [str(payload), f"{b.person.name}@127.0.0.1:web1/~/sftp.bin"],
                "bastion scp -O": ["-O"]
                + options(b.person.key, bastion.known_hosts, bastion.port)
                + [str(payload), f"{b.person.name}@127.0.0.1:web1/~/scp.bin"],
            }
            times: dict[str, list[float]] = {name: [] for name in ways}
            for _ in range(args.rounds):
                for name, argv in ways.items():
                    times[name].append(timed(["scp", *argv]))
            for name in ("direct.bin", "sftp.bin", "scp.bin"):
                landed = (t.home / name).read_bytes()
                assert hashlib.sha256(landed).hexdigest() == digest, name
    base = statistics.median(times["direct"])
    print(f"upload of {args.mb} MB, median of {args.rounds} rounds")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:15} {median:6.2f} s  {median / base:5.2f}x direct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
