"""The auditors' console, everything real: sign-in, search, replay, live, terminate.

A real sshd, the real agent (strace on a real ssh in a real pty), audit-web
as its own account reading the store through the agent's read_group and
asking the agent through its control socket, and Debian's headless Chromium
under Selenium. The auditor signs in with a Unix password, finds a command
by searching, opens it and the player lands just before it; watches a live
session get a new command; terminates it with a reason the ssh's terminal
shows; a person who is not an auditor gets 403 for that session and its
recording; the access log lists what the auditor did; stored markup shows
as text. Screenshots go to build/artifacts/.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from agent.records import parse_iso
from tests import console_harness, harness, web_harness
from tests.console_harness import ConsoleBastion

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = harness.REPO / "build" / "artifacts"
WAIT_S = 30.0
NEEDLE = "console-needle-$((6*7))"
HOSTILE = "echo '<img src=x onerror=alert(1)>'"


@pytest.fixture(scope="module")
def bastion() -> Iterator[ConsoleBastion]:
    if not web_harness.Path(web_harness.CHROMIUM).exists():
        pytest.skip("chromium is not installed (make test installs it)")
    with console_harness.console_bastion() as b:
        yield b


@pytest.fixture
def browser(bastion: ConsoleBastion, tmp_path: Path) -> Iterator[Any]:
    with web_harness.chromium(tmp_path / "chromium") as driver:
        driver.set_page_load_timeout(WAIT_S)
        driver.set_script_timeout(WAIT_S)
        yield driver
    print(f"--- audit-web.log\n{(bastion.workdir / 'audit-web.log').read_text()}")
    print(f"--- agent log\n{bastion.agent.log_text()[-4000:]}")


def by_id(driver: Any, name: str, timeout: float = WAIT_S) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(
            expected_conditions.presence_of_element_located((By.ID, name))
        )
    except TimeoutException:
        text = driver.execute_script("return document.body.innerText")
        raise AssertionError(f"no #{name} on {driver.current_url}:\n{text}") from None


def sign_in(driver: Any, bastion: ConsoleBastion, user: harness.TestUser) -> None:
    driver.get(bastion.web_url + "sign-in")
    by_id(driver, "username").send_keys(user.name)
    by_id(driver, "password").send_keys(user.password)
    by_id(driver, "sign-in").click()
    assert by_id(driver, "user").text == user.name


def status_of(driver: Any, url: str) -> int:
    """What the browser gets for `url` with its own cookies (fetch)."""
    return int(
        driver.execute_async_script(
            "const done = arguments[1];"
            "fetch(arguments[0], {credentials: 'same-origin'})"
            ".then(r => done(r.status), () => done(0));",
            url,
        )
    )


def shot(driver: Any, name: str) -> None:
    """The whole page as a picture (for the README), then the usual window back."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1280, min(2400, int(height) + 120))
    driver.save_screenshot(str(ARTIFACTS / name))
    driver.set_window_size(1000, 700)


def player_lands_before(driver: Any, record: dict[str, Any]) -> None:
    """The player's time is within 2 s before the exported command's moment."""
    moment = parse_iso(record["time"]) - parse_iso(record["session_started_at"])
    # The player's own clock, as the page shows it from player.getCurrentTime().
    shown = harness.wait_for(
        lambda: float(by_id(driver, "player-time").text or 0) or None,
        timeout=WAIT_S,
    )
    assert moment - 2.0 <= shown <= moment, (shown, moment)


def markup_is_text(driver: Any, search_url: str, hostile: str) -> None:
    """A search's hits show a stored command with markup as text, and run nothing."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    driver.get(search_url)
    assert hostile in by_id(driver, "hits").text
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 (no dialog ever opened)
    assert driver.find_elements(By.CSS_SELECTOR, "#hits img") == []


def open_session(bastion: ConsoleBastion, tag: str) -> pexpect.spawn:
    child = harness.spawn_ssh(
        harness.ssh_argv(
            bastion.target_user, bastion.target, "-o", f"SetEnv=AUDIT_SESSION={tag}"
        ),
        cols=100,
    )
    ssh_pid = harness.ssh_pid_of(child)
    child.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=10)
    return child


def typed(child: pexpect.spawn, line: str, shows: bytes) -> None:
    child.send(line.encode() + b"\r")
    child.expect(shows)
    child.expect(harness.PROMPT)


def stored(bastion: ConsoleBastion, tag: str, n: int) -> list[dict[str, Any]]:
    return harness.wait_for(  # type: ignore[no-any-return]
        lambda: (
            (r := harness.export(bastion.data_dir, "--session", tag))
            and len(r) >= n
            and r
        ),
        timeout=WAIT_S,
    )


@pytest.fixture(scope="module")
def recorded(bastion: ConsoleBastion) -> tuple[str, dict[str, Any]]:
    """A closed session: a few commands, the needle among them, some seconds apart."""
    tag = "console-e2e"
    child = open_session(bastion, tag)
    typed(child, "echo first", b"first")
    time.sleep(2.5)
    typed(child, HOSTILE, b"onerror")
    time.sleep(2.5)
    typed(child, f"echo {NEEDLE}", b"console-needle-42")
    time.sleep(2.5)
    typed(child, "echo last", b"last")
    child.sendline(b"exit")
    child.expect(pexpect.EOF)
    records = stored(bastion, tag, 4)
    harness.wait_for(
        lambda: harness.sessions_in(bastion.data_dir)[tag].status == "closed",
        timeout=WAIT_S,
    )
    needle = next(r for r in records if "console-needle" in r["command"])
    return tag, needle


def test_search_finds_the_command_and_the_player_lands_before_it(
    bastion: ConsoleBastion, recorded: tuple[str, dict[str, Any]], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    tag, needle = recorded
    sign_in(browser, bastion, bastion.auditor)
    browser.get(bastion.web_url + "search")
    by_id(browser, "q").send_keys("console-needle")
    by_id(browser, "search").click()
    assert "1 match" in by_id(browser, "hit-count").text
    shot(browser, "console-search.png")
    browser.find_element(By.CSS_SELECTOR, "#hits a.hit").click()
    by_id(browser, "player")
    assert "#t=" in browser.current_url

    player_lands_before(browser, needle)
    shot(browser, "console-session.png")

    # Stored markup is text on the page, in search and on the session page.
    assert HOSTILE in browser.find_element(By.ID, "commands").text
    markup_is_text(browser, bastion.web_url + "search?q=onerror", HOSTILE)

    # Clicking another command seeks there, and that moment is a URL.
    browser.get(bastion.web_url + f"sessions/{tag}")
    link = browser.find_element(By.CSS_SELECTOR, "#cmd-1 a.seek")
    first_t = float(link.get_attribute("data-t"))
    link.click()
    harness.wait_for(
        lambda: abs(float(by_id(browser, "player-time").text or -9) - first_t) < 0.5,
        timeout=WAIT_S,
    )
    assert browser.current_url.endswith(f"#t={link.get_attribute('data-t')}")
    assert status_of(browser, f"/sessions/{tag}/commands.csv") == 200


def test_a_person_who_is_not_an_auditor_gets_403_for_another_users_session(
    bastion: ConsoleBastion, recorded: tuple[str, dict[str, Any]], browser: Any
) -> None:
    tag, _ = recorded
    sign_in(browser, bastion, bastion.person)
    assert status_of(browser, f"/sessions/{tag}") == 403
    assert status_of(browser, f"/sessions/{tag}/cast") == 403
    assert status_of(browser, f"/sessions/{tag}/cast?download=1") == 403
    assert status_of(browser, f"/sessions/{tag}/commands.json") == 403
    assert status_of(browser, "/access") == 403
    browser.get(bastion.web_url + "sessions")
    assert tag not in by_id(browser, "sessions").text  # root's session, not theirs
    browser.get(bastion.web_url + "search?q=console-needle")
    assert "0 matches" in by_id(browser, "hit-count").text


def test_live_view_shows_a_new_command_then_terminate_cuts_the_ssh(
    bastion: ConsoleBastion, browser: Any
) -> None:
    tag = "console-live"
    child = open_session(bastion, tag)
    typed(child, "echo live-one", b"live-one")
    stored(bastion, tag, 1)
    sign_in(browser, bastion, bastion.auditor)
    browser.get(bastion.web_url + "live")
    assert tag in by_id(browser, "sessions").text
    browser.get(bastion.web_url + f"sessions/{tag}")
    assert by_id(browser, "live-state").text == "live"

    typed(child, "echo live-two-$((40+2))", b"live-two-42")
    harness.wait_for(
        lambda: "live-two" in by_id(browser, "commands").text, timeout=WAIT_S
    )
    # The player's live driver shows the screen as it grows.
    harness.wait_for(
        lambda: "live-two-42" in by_id(browser, "player").text, timeout=WAIT_S
    )
    shot(browser, "console-live.png")

    by_id(browser, "reason").send_keys("ticket 4711: unapproved change")
    by_id(browser, "terminate-button").click()
    child.expect(b"ended by auditor " + bastion.auditor.name.encode())
    child.expect(b"ticket 4711: unapproved change")
    child.expect(pexpect.EOF, timeout=WAIT_S)
    assert "terminated" in by_id(browser, "notice").text
    reason = f"terminated by auditor {bastion.auditor.name}: ticket 4711"
    harness.wait_for(
        lambda: harness.sessions_in(bastion.data_dir)[tag].status == "terminated",
        timeout=WAIT_S,
    )
    browser.get(bastion.web_url + f"sessions/{tag}")
    assert by_id(browser, "status").text == "terminated"
    assert reason in by_id(browser, "end-reason").text
    shot(browser, "console-terminated.png")


def test_the_access_log_lists_what_the_auditor_did(
    bastion: ConsoleBastion, recorded: tuple[str, dict[str, Any]], browser: Any
) -> None:
    tag, _ = recorded
    sign_in(browser, bastion, bastion.auditor)
    browser.get(bastion.web_url + "access")
    rows = by_id(browser, "access").text.splitlines()
    mine = [r for r in rows if f" {bastion.auditor.name} auditor " in r]
    actions = {r.split(" auditor ")[1].split()[0] for r in mine}
    assert {"view", "replay", "search", "export", "terminate"} <= actions, rows
    assert any("view" in r and tag in r for r in mine)
    assert any("terminate" in r and "console-live" in r for r in mine)
    assert any("search" in r and "console-needle" in r for r in mine)
    # The person's searches, and their refused tries at the auditor's session.
    theirs = [r for r in rows if f" {bastion.person.name} user " in r]
    assert any("refused: not theirs to see" in r and tag in r for r in theirs), rows
    shot(browser, "console-access-log.png")
    shutil.copy(ARTIFACTS / "console-session.png", ARTIFACTS / "console.png")


def test_the_agent_shares_the_store_and_casts_but_never_the_logs(
    bastion: ConsoleBastion, recorded: tuple[str, dict[str, Any]]
) -> None:
    import grp
    import stat

    gid = grp.getgrnam(bastion.web.name).gr_gid
    data = bastion.data_dir

    def mode(path: Path) -> tuple[int, int]:
        st = path.stat()
        return stat.S_IMODE(st.st_mode), st.st_gid

    for directory in (data, data / "store", data / "casts"):
        assert mode(directory) == (0o2750, gid), directory
    for file in [*(data / "store").glob("*.json"), *(data / "casts").glob("*.cast")]:
        assert mode(file) == (0o640, gid), file
    assert mode(data / "status.json") == (0o640, gid)
    assert stat.S_IMODE((data / "logs").stat().st_mode) == 0o700
    assert mode(data / "control.sock") == (0o660, gid)
