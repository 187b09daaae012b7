"""audit-export, audit-tail and audit-agent as an operator runs them."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.daemon.store import Store
from agent.records import Command, Kind, iso
from tests.harness import run_cli
from tests.test_store import make_session


def seed(data_dir: Path) -> None:
    store = Store(data_dir / "store", 0.05)
    store.open()
    for sid, pid, host_cmds in (
        ("s1", 1, ["ls", "echo \x1b[31mred\x1b[0m\tx"]),
        ("s2", 2, ["id"]),
    ):
        session = make_session(sid, pid=pid)
        if sid == "s2":
            session = dataclasses.replace(session, host="db2", bastion_user="carol")
        cmds = [
            Command(sid, n + 1, iso(1_800_000_000.0 + 10 * pid + n), c)
            for n, c in enumerate(host_cmds)
        ]
        store.submit(dataclasses.replace(session, command_count=len(cmds)), cmds)
    store.flush()


def test_export_empty_store_is_an_empty_array(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    result = run_cli("audit-export", "--data-dir", str(tmp_path))
    assert (result.returncode, result.stdout) == (0, "[]\n")
    jsonl = run_cli("audit-export", "--data-dir", str(tmp_path), "--format", "jsonl")
    assert (jsonl.returncode, jsonl.stdout) == (0, "")


def test_export_missing_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("audit-export", "--data-dir", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"audit-export: error: no such data directory: {tmp_path / 'nope'}\n"
    )


@pytest.mark.root
def test_export_unreadable_data_dir_for_a_user() -> None:
    """The store is root's (0700): another user gets one line, not a traceback."""
    import shutil
    import subprocess
    import tempfile

    from tests.harness import BIN

    outer = Path(tempfile.mkdtemp(prefix="bastion-audit-perm."))
    try:
        outer.chmod(0o755)
        data_dir = outer / "data"
        (data_dir / "store").mkdir(parents=True)
        data_dir.chmod(0o700)
        result = subprocess.run(
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                str(BIN / "audit-export"),
                "--data-dir",
                str(data_dir),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr == (
            f"audit-export: error: cannot read data directory {data_dir}: "
            "permission denied (it is root's)\n"
        )
    finally:
        shutil.rmtree(outer)


def test_export_fields_filters_and_formats(tmp_path: Path) -> None:
    seed(tmp_path)
    records = json.loads(run_cli("audit-export", "--data-dir", str(tmp_path)).stdout)
    assert [r["command"] for r in records] == ["ls", "echo \x1b[31mred\x1b[0m\tx", "id"]
    first = records[0]
    assert {
        k: first[k]
        for k in ("session", "bastion_user", "remote_user", "host", "port", "seq")
    } == {
        "session": "s1",
        "bastion_user": "alice",
        "remote_user": "bob",
        "host": "db1",
        "port": 2200,
        "seq": 1,
    }
    assert first["time"] == "2027-01-15T08:00:10.000Z"

    def commands(*args: str) -> list[str]:
        out = run_cli(
            "audit-export", "--data-dir", str(tmp_path), "--format", "jsonl", *args
        )
        assert out.returncode == 0, out.stderr
        return [json.loads(line)["command"] for line in out.stdout.splitlines()]

    assert commands("--session", "s2") == ["id"]
    assert commands("--user", "carol") == ["id"]
    assert commands("--user", "bob", "--host", "db1") == [
        "ls",
        "echo \x1b[31mred\x1b[0m\tx",
    ]
    assert commands("--since", "2027-01-15T08:00:11Z") == [
        "echo \x1b[31mred\x1b[0m\tx",
        "id",
    ]
    assert commands("--until", "2027-01-15T09:00:10+01:00") == ["ls"]

    out_file = tmp_path / "out.json"
    result = run_cli("audit-export", "--data-dir", str(tmp_path), "-o", str(out_file))
    assert result.returncode == 0 and json.loads(out_file.read_text()) == records
    assert not list(tmp_path.glob(".out.json.*"))  # written beside it, then renamed


def test_export_bad_time_and_bad_output(tmp_path: Path) -> None:
    seed(tmp_path)
    bad = run_cli("audit-export", "--data-dir", str(tmp_path), "--since", "yesterday")
    assert (bad.returncode, bad.stderr) == (
        2,
        "audit-export: error: not an ISO 8601 time nor a time ago like 2h or 7d: "
        "'yesterday'\n",
    )
    nowhere = run_cli(
        "audit-export", "--data-dir", str(tmp_path), "-o", str(tmp_path / "no" / "x")
    )
    assert nowhere.returncode == 1 and "Traceback" not in nowhere.stderr
    assert str(tmp_path / "no") in nowhere.stderr


def test_export_names_a_corrupt_shard_and_exports_the_rest(tmp_path: Path) -> None:
    seed(tmp_path)
    (tmp_path / "store" / "00000002.json").write_text("not json")
    result = run_cli("audit-export", "--data-dir", str(tmp_path))
    assert result.returncode == 3
    assert len(json.loads(result.stdout)) == 3
    assert "00000002.json" in result.stderr


def test_tail_plain_lines_escape_control_characters(tmp_path: Path) -> None:
    seed(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text('bastion = "bastion-9"\n')
    args = ("--data-dir", str(tmp_path), "--config", str(config), "--no-follow")
    result = run_cli("audit-tail", *args, "-n", "2")
    assert result.returncode == 0, result.stderr
    # time, bastion, who, session, risk (- for none), command: the command last.
    assert result.stdout.splitlines() == [
        "2027-01-15T08:00:11.000Z\tbastion-9\talice → bob@db1:2200\ts1\t-"
        "\techo \\x1b[31mred\\x1b[0m\\tx",
        "2027-01-15T08:00:20.000Z\tbastion-9\tcarol → bob@db2:2200\ts2\t-\tid",
    ]


def test_tail_rich_view_on_a_terminal(tmp_path: Path) -> None:
    import pexpect

    seed(tmp_path)
    from tests.harness import BIN

    child = pexpect.spawn(
        str(BIN / "audit-tail"),
        ["--data-dir", str(tmp_path)],
        dimensions=(24, 120),
        env={**os.environ, "TERM": "xterm-256color"},
    )
    child.expect("carol")
    child.expect("id")
    child.sendintr()  # Ctrl-C
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert b"Traceback" not in (child.before or b"")


def test_agent_refuses_to_run_without_root_or_with_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("poll_interval_s = 'fast'\n")
    result = run_cli("audit-agent", "run", "--config", str(config))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"audit-agent: error: {config}: poll_interval_s must be a number of seconds\n"
    )


def test_config_layers_and_errors(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('data_dir = "/srv/audit"\npoll_interval_s = 0.5\n')
    loaded = load_config(config, {"poll_interval_s": 0.2})
    assert (loaded.data_dir, loaded.poll_interval_s) == (Path("/srv/audit"), 0.2)
    for text, message in [
        ("nonsense = 1\n", "nonsense is not a known key"),
        ('data_dir = "relative"\n', "data_dir must be an absolute path"),
        ("flush_interval_s = 5\n", "flush_interval_s must be between"),
        ("poll_interval_s = \n", "invalid config file"),
    ]:
        config.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(config)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")


def test_fast_json_text_is_exactly_json_dumps() -> None:
    from agent.export_record import JsonRecords, Stamp, flat_record
    from agent.highlight import BUILTIN_RULES

    session = make_session("s1")
    stamp = Stamp('bastion "9" ✓', BUILTIN_RULES)
    records = JsonRecords(stamp)
    for text in [
        'echo "}, {"',
        "tab\there",
        "esc \x1b[31m",
        "中文 ✓",
        "back\\slash",
        "\u2028",
        "",
        "rm -rf / ; curl x | sh",
    ]:
        command = Command("s1", 7, "2027-01-15T08:00:10.000Z", text)
        transfer = Command(
            "s1",
            8,
            "2027-01-15T08:00:11.000Z",
            f"upload /tmp/{text}",
            kind=Kind.TRANSFER,
            transfer={"path": f"/tmp/{text}", "size": 3, "sha256": None},
        )
        for s, record in itertools.product((session, None), (command, transfer)):
            assert records.text(record, s) == json.dumps(
                flat_record(record, s, stamp), ensure_ascii=False
            )
    risky = Command("s1", 8, "2027-01-15T08:00:10.000Z", "rm -rf / ; curl x | sh")
    assert flat_record(risky, None, stamp)["risk"] == ["rm-root", "pipe-to-shell"]
