"""etc/agent.toml documents every key with its real default; errors name file and key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from agent.config import Config, ConfigError, load_config
from tests.harness import REPO

TEMPLATE = REPO / "etc" / "agent.toml"
# Shown with an example, not the default (the default depends on the install).
EXAMPLES = {"tracker_script", "highlight"}


def documented_defaults() -> dict[str, str]:
    """`#key = value` lines of the template (top level, one line each)."""
    found = {}
    for line in TEMPLATE.read_text().splitlines():
        m = re.fullmatch(r"#([a-z_]+) = (.+)", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def test_every_key_is_documented_in_the_template_and_the_readme() -> None:
    keys = {f.name for f in dataclasses.fields(Config)}
    template = TEMPLATE.read_text()
    readme = (REPO / "README.md").read_text()
    for key in keys:
        assert f"#{key} = " in template, key
        assert f"| `{key}` |" in readme, key


def test_the_template_as_shipped_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(TEMPLATE) == Config()


def test_each_documented_default_is_the_real_default(tmp_path: Path) -> None:
    defaults = documented_defaults()
    assert set(defaults) >= {f.name for f in dataclasses.fields(Config)} - EXAMPLES
    config = tmp_path / "agent.toml"
    for key, value in defaults.items():
        if key in EXAMPLES:
            continue
        config.write_text(f"{key} = {value}\n")
        assert load_config(config) == Config(), key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("recording = 1\n", "recording must be true or false"),
        ("recording_max_bytes = '1M'\n", "recording_max_bytes must be a whole number"),
        (
            "recording_burst_max_bytes = 10\n",
            "recording_burst_max_bytes must be between",
        ),
        ("events_file = 'relative.jsonl'\n", "events_file must be an absolute path"),
        ("events_syslog = 'smtp://x'\n", "events_syslog: 'smtp://x' is not udp://"),
        ("events_syslog = 'udp://x:99999'\n", "port 99999 is out of range"),
        ("events_syslog_facility = 'mail2'\n", "events_syslog_facility must be one of"),
        ("status_interval_s = 0\n", "status_interval_s must be between"),
        ("highlight = [{ name = 'x', pattern = '[' }]\n", r"highlight\[0\]\.pattern"),
        ("highlight_builtin = 'no'\n", "highlight_builtin must be true or false"),
    ],
)
def test_bad_values_name_the_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(config)
    assert str(error.value).startswith(f"{config}: ")


def test_new_keys_load(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'events_file = "/var/log/bastion-audit/events.jsonl"\n'
        'events_syslog = "tcp://[::1]:6514"\n'
        'events_syslog_facility = "local3"\n'
        "recording = false\n"
        "recording_max_bytes = 1048576\n"
        "[[highlight]]\n"
        'name = "prod"\n'
        'pattern = "prod-db"\n'
    )
    loaded = load_config(config, {"events_syslog": "unix:/dev/log"})
    assert loaded.events_file == Path("/var/log/bastion-audit/events.jsonl")
    assert loaded.events_syslog == "unix:/dev/log"  # the flag wins
    assert loaded.events_syslog_facility == "local3"
    assert (loaded.recording, loaded.recording_max_bytes) == (False, 1 << 20)
    assert [r.name for r in loaded.highlight] == ["prod"]
