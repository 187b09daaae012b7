"""audit-export --jobs N writes byte for byte what one process writes.

A real store of several shards (hostile text, records of every kind, a
command whose session is gone, chained documents), written through the
agent's Store, exported by the real audit-export with one process and with
forked workers, in every format and for each filter; a corrupt shard among
them is named the same way and the rest exported the same.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import subprocess
import tempfile
from pathlib import Path

import pytest

from agent.daemon.signer import Chain, Signer
from agent.daemon.store import SHARD_MAX_COMMANDS, Store
from agent.exits import ExitStatus
from agent.reader import scan
from agent.reading import Selection
from agent.tools.export_shards import select, write_documents, write_in_jobs
from tests.harness import BIN
from tests.test_export_records import STAMP, command, seed
from tests.test_store import make_session

FILTERS = [
    [],
    ["--session", "s2"],
    ["--contains", "ÜNÏ"],
    ["--regex", r"^upload .*,"],
    ["--since", "2027-01-15T08:01:40.000Z", "--until", "2027-01-15T08:40:00.000Z"],
    ["--user", 'bob "the, admin"'],
]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("export-shards")
    seed(data_dir, chained=True)
    chain = Chain(Signer.load_or_create(data_dir), data_dir)
    store = Store(data_dir / "store", 0.05, chain=chain)
    store.open()
    texts = ["ls -l", 'ünïcödé, "x"\r\n', "rm -rf /", "echo \x1b[31m"]
    for n in range(2, 5):  # sealed shards, then the newest
        session = make_session(f"s{n}", pid=n)
        cmds = [
            command(session.id, i, f"{texts[i % len(texts)]} {i}")
            for i in range(1, SHARD_MAX_COMMANDS + 1)
        ]
        for first in range(0, len(cmds), 500):
            batch = cmds[first : first + 500]
            store.submit(dataclasses.replace(session, command_count=first + 500), batch)
            store.flush()
    store.stop()
    assert len(list((data_dir / "store").glob("*.json"))) >= 3
    return data_dir


def export(data_dir: Path, *args: str) -> tuple[int, bytes, str]:
    """Exit status, the output's bytes as written (CSV's CR LF too), stderr."""
    result = subprocess.run(
        [str(BIN / "audit-export"), "--data-dir", str(data_dir), *args],
        capture_output=True,
    )
    return result.returncode, result.stdout, result.stderr.decode()


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: " ".join(f) or "all")
def test_workers_write_what_one_process_writes(
    store_dir: Path, fmt: str, filters: list[str]
) -> None:
    args = ["--format", fmt, *filters]
    one = export(store_dir, *args, "--jobs", "1")
    assert one[0] == ExitStatus.SUCCESS, one[2]
    for jobs in ("2", "3"):
        assert export(store_dir, *args, "--jobs", jobs) == one


def test_a_corrupt_shard_is_named_and_the_rest_exported_alike(
    store_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "data"
    (broken / "store").mkdir(parents=True)
    shards = sorted((store_dir / "store").glob("*.json"))
    for shard in shards:
        (broken / "store" / shard.name).write_bytes(shard.read_bytes())
    (broken / "store" / shards[1].name).write_text('{"commands": {"1": ')
    one = export(broken, "--format", "jsonl", "--jobs", "1")
    assert one[0] == ExitStatus.PARTIAL
    assert shards[1].name in one[2] and "exported the rest" in one[2]
    assert export(broken, "--format", "jsonl", "--jobs", "2") == one


def test_to_a_file_with_workers(store_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    code, _, stderr = export(
        store_dir, "--format", "csv", "--jobs", "2", "-o", str(out)
    )
    assert code == ExitStatus.SUCCESS, stderr
    assert out.read_bytes() == export(store_dir, "--format", "csv", "--jobs", "1")[1]


@pytest.mark.parametrize("jobs", ["0", "65", "two"])
def test_a_bad_number_of_jobs_is_refused_in_one_line(
    store_dir: Path, jobs: str
) -> None:
    code, out, err = export(store_dir, "--jobs", jobs)
    assert code == 2 and out == b""
    assert f"--jobs: not a number of processes from 1 to 64: {jobs!r}" in err


def test_the_workers_are_stopped_and_joined(store_dir: Path) -> None:
    store = scan(store_dir)
    serial = io.StringIO()
    write_documents(select(store, Selection()), store.sessions, serial, "json", STAMP)
    store = scan(store_dir)
    parallel = io.StringIO()  # no file: the workers' text is copied in here
    count = write_in_jobs(store, Selection(), parallel, "json", STAMP, 2)
    assert multiprocessing.active_children() == []
    text = parallel.getvalue()
    assert count > 3 * SHARD_MAX_COMMANDS and text == serial.getvalue()


def test_appended_to_a_file_as_a_shell_does(store_dir: Path, tmp_path: Path) -> None:
    # `>>` opens stdout with O_APPEND, which sendfile refuses (EINVAL): the
    # workers' text is copied by read and write instead.
    target = tmp_path / "log.jsonl"
    target.write_bytes(b"earlier\n")
    with target.open("ab") as out:
        result = subprocess.run(
            [str(BIN / "audit-export"), "--data-dir", str(store_dir)]
            + ["--format", "jsonl", "--jobs", "2"],
            stdout=out,
            stderr=subprocess.PIPE,
        )
    assert result.returncode == ExitStatus.SUCCESS, result.stderr
    one = export(store_dir, "--format", "jsonl", "--jobs", "1")[1]
    assert target.read_bytes() == b"earlier\n" + one


def test_the_spool_is_removed(store_dir: Path) -> None:
    def spools() -> set[Path]:
        return set(Path("/dev/shm").glob("audit-export.*")) | set(
            Path(tempfile.gettempdir()).glob("audit-export.*")
        )

    before = spools()
    assert export(store_dir, "--jobs", "2")[0] == ExitStatus.SUCCESS
    assert spools() <= before


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_full_output_is_named(store_dir: Path, jobs: str) -> None:
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [str(BIN / "audit-export"), "--data-dir", str(store_dir), "--jobs", jobs],
            stdout=full,
            stderr=subprocess.PIPE,
        )
    assert (result.returncode, result.stderr.decode()) == (
        ExitStatus.ERROR,
        "audit-export: error: No space left on device: standard output\n",
    )


@pytest.mark.root
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_full_disk_under_the_output_file_is_named(
    store_dir: Path, tmp_path: Path, jobs: str
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True
    )
    try:
        target = disk / "out.json"
        code, _, err = export(store_dir, "--jobs", jobs, "-o", str(target))
        assert (code, err) == (
            ExitStatus.ERROR,
            f"audit-export: error: No space left on device: {target}\n",
        )
        assert list(disk.iterdir()) == []  # neither the file nor its temporary
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
