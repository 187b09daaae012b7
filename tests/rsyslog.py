"""A real rsyslogd of the test's own: 127.0.0.1, free ports, a temp dir.

Its own configuration, work directory, pid file, unix socket and output file,
all under the test's directory: never /etc/rsyslog.conf, /dev/log or the
machine's syslog. Each message it receives becomes one line of `received`,
its RFC 5424 fields separated by `|`, the message last.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness import free_port, wait_for

RSYSLOGD = "/usr/sbin/rsyslogd"
FIELDS = (
    "inputname",
    "pri",
    "protocol-version",
    "hostname",
    "app-name",
    "procid",
    "msgid",
    "structured-data",
    "msg",
)


@dataclass(frozen=True)
class Message:
    inputname: str
    pri: int
    version: str
    hostname: str
    app: str
    procid: str
    msgid: str
    sd: str
    msg: str


@dataclass
class Rsyslog:
    udp_port: int
    tcp_port: int
    socket_path: Path
    received: Path
    process: subprocess.Popen[bytes]

    def messages(self, inputname: str | None = None) -> list[Message]:
        try:
            text = self.received.read_text(errors="replace")
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            parts = line.split("|", len(FIELDS) - 1)
            if len(parts) != len(FIELDS) or parts[-1].strip().startswith("probe"):
                continue
            name, pri, version, *rest = parts
            message = Message(name, int(pri), version, *rest)
            if inputname is None or message.inputname == inputname:
                found.append(message)
        return found


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(workdir: Path, udp: int | None, tcp: int | None, sock: Path) -> str:
    fields = "".join(
        f'  property(name="{name}"'
        + (' droplastlf="on"' if name == "msg" else "")
        + ")"
        + (' constant(value="|")\n' if name != "msg" else ' constant(value="\\n")\n')
        for name in FIELDS
    )
    inputs = []
    if udp is not None:
        inputs.append('module(load="imudp")')
        inputs.append(f'input(type="imudp" address="127.0.0.1" port="{udp}")')
    if tcp is not None:
        inputs.append('module(load="imtcp")')
        inputs.append(f'input(type="imtcp" address="127.0.0.1" port="{tcp}")')
    inputs.append('module(load="imuxsock" SysSock.Use="off")')
    inputs.append(f'input(type="imuxsock" Socket="{sock}" CreatePath="on")')
    return (
        f'global(workDirectory="{workdir}" maxMessageSize="64k")\n'
        + "\n".join(inputs)
        + '\ntemplate(name="fields" type="list") {\n'
        + fields
        + "}\n"
        + f'action(type="omfile" file="{workdir}/received.log" template="fields")\n'
    )


@contextlib.contextmanager
def rsyslogd(
    workdir: Path, udp_port: int | None = None, tcp_port: int | None = None
) -> Iterator[Rsyslog]:
    """rsyslogd -n with UDP, TCP and a unix socket; SIGTERM and wait after."""
    if not Path(RSYSLOGD).exists():
        raise RuntimeError("rsyslog is not installed (make test installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    udp = udp_port or free_udp_port()
    tcp = tcp_port or free_port()
    sock = workdir / "log.sock"
    conf = workdir / "rsyslog.conf"
    conf.write_text(config_text(workdir, udp, tcp, sock))
    check = subprocess.run(
        [RSYSLOGD, "-N1", "-f", str(conf)], capture_output=True, text=True
    )
    if check.returncode != 0:
        raise RuntimeError(f"rsyslog.conf does not validate: {check.stderr}")
    with open(workdir / "rsyslogd.out", "ab") as out:
        process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(workdir / "rsyslogd.pid")],
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    server = Rsyslog(udp, tcp, sock, workdir / "received.log", process)
    try:
        _wait_until_it_listens(server)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_it_listens(server: Rsyslog) -> None:
    """Probe each input until rsyslogd has written what it got from all three."""

    def probed() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError("rsyslogd exited")
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with udp, unix, contextlib.suppress(OSError):
            udp.sendto(
                b"<14>1 - - probe - - - probe udp", ("127.0.0.1", server.udp_port)
            )
            unix.sendto(b"<14>probe: probe unix", str(server.socket_path))
            with socket.create_connection(("127.0.0.1", server.tcp_port), 1) as tcp:
                tcp.sendall(b"<14>1 - - probe - - - probe tcp\n")
        time.sleep(0.1)
        try:
            text = server.received.read_text(errors="replace")
        except FileNotFoundError:
            return False
        return all(f"probe {kind}" in text for kind in ("tcp", "udp", "unix"))

    wait_for(probed, timeout=20, interval=0.2)


def available() -> bool:
    return Path(RSYSLOGD).exists()
