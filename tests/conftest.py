"""Fixtures that own every process, user and port the tests create."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root (strace, sshd, users)"
)


def pytest_configure(config: pytest.Config) -> None:
    # A background job of a non-interactive shell (`make test &`, a CI
    # runner) starts with SIGINT ignored, and every child inherits that: a
    # Python child then never sees KeyboardInterrupt, and the tests that end
    # audit-tail with Ctrl-C wait forever. A handler (unlike SIG_IGN) is
    # reset to the default at exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("root"):
            item.add_marker(needs_root)
            for tool in ("strace", "sshd"):
                path = harness.SSHD if tool == "sshd" else shutil.which(tool)
                if not path or not Path(path).exists():
                    item.add_marker(pytest.mark.skip(reason=f"{tool} is not installed"))


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("e2e")
    path.chmod(0o755)  # sshd and the test user read the host key dir
    return path


@pytest.fixture(scope="module")
def server(module_dir: Path) -> Iterator[harness.Sshd]:
    with harness.sshd(module_dir) as s:
        yield s


@pytest.fixture(scope="module")
def user(module_dir: Path) -> Iterator[harness.TestUser]:
    with harness.test_user(module_dir) as u:
        yield u


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def running_agent(data_dir: Path) -> Iterator[harness.AgentProcess]:
    with harness.agent(data_dir) as a:
        yield a
