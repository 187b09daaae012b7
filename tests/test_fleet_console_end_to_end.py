"""One console over the fleet store: two bastions' real sessions, in a real browser.

Two real agents (each scoped to its own shell) trace tagged ssh sessions
through a real sshd and ship them to a PostgreSQL 15 of the test's own;
audit-web, as its own account, reads that fleet store as a role of the
auditor group (`[web.fleet]`) and has its own bastion's agent log every
access, which that agent ships to the fleet's access log. In Debian's
headless Chromium: an auditor finds a command typed on the other bastion by
searching, opens it, and the player lands within 2 s before it; a live
session of the other bastion plays as the fleet receives it (and can only
be terminated from its own console), one of this bastion is terminated; a
person who is not an auditor gets 403 for another user's session; stored
markup shows as text; the fleet's access log lists what was done, on which
bastion. Screenshots go to build/artifacts/fleet-console-*.png.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import harness, web_harness
from tests.fleet_console_harness import FleetConsoleSite, fleet_console
from tests.test_console_end_to_end import (
    by_id,
    markup_is_text,
    player_lands_before,
    sign_in,
    status_of,
)
from tests.test_console_end_to_end import shot as page_shot

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.browser]

WAIT_S = 45.0
NEEDLE = "fleet-needle-$((6*7))"
HOSTILE = "echo '<img src=x onerror=alert(1)>'"
HOME, OTHER = "east", "west"


@pytest.fixture(scope="module")
def site() -> Iterator[FleetConsoleSite]:
    if not Path(web_harness.CHROMIUM).exists():
        pytest.skip("chromium is not installed (make test installs it)")
    with fleet_console((HOME, OTHER)) as s:
        yield s


@pytest.fixture
def browser(site: FleetConsoleSite, tmp_path: Path) -> Iterator[Any]:
    with web_harness.chromium(tmp_path / "chromium") as driver:
        driver.set_page_load_timeout(WAIT_S)
        driver.set_script_timeout(WAIT_S)
        yield driver
    print(site.log_text[-8000:])


def shot(driver: Any, name: str) -> None:
    page_shot(driver, f"fleet-console-{name}.png")


def fleet_session(site: FleetConsoleSite, bastion: str, tag: str) -> tuple[Any, ...]:
    rows = site.pg.sql(
        "SELECT status, command_count FROM sessions WHERE bastion = %s AND id = %s",
        (bastion, tag),
    )
    return rows[0] if rows else ()


def fleet_cast_bytes(site: FleetConsoleSite, bastion: str, tag: str) -> int:
    rows = site.pg.sql(
        "SELECT coalesce(sum(raw_bytes), 0) FROM recordings"
        " WHERE bastion = %s AND session = %s",
        (bastion, tag),
    )
    return int(rows[0][0])


def shipped_closed(site: FleetConsoleSite, bastion: str, tag: str, n: int) -> None:
    """The session closed with n commands in the fleet, its recording whole."""
    cast = site.bastions[bastion].data_dir / "casts" / f"{tag}.cast"

    def state() -> tuple[Any, ...]:
        size = cast.stat().st_size if cast.exists() else None
        return (
            fleet_session(site, bastion, tag),
            fleet_cast_bytes(site, bastion, tag),
            size,
        )

    try:
        harness.wait_for(
            lambda: (s := state())[0] == ("closed", n) and s[1] == s[2],
            timeout=WAIT_S,
        )
    except TimeoutError:
        raise AssertionError(f"{bastion}/{tag}: {state()}\n{site.log_text}") from None


@pytest.fixture(scope="module")
def recorded(site: FleetConsoleSite) -> dict[str, Any]:
    """A closed session on each bastion; the other's has the needle, seconds in."""
    home, other = site.bastions[HOME], site.bastions[OTHER]
    home.open_session(site.target_user, site.target, "fc-home")
    home.type("echo home-only", b"home-only")
    home.close_session()
    other.open_session(site.target_user, site.target, "fc-other")
    other.type("echo first", b"first")
    time.sleep(2.5)
    other.type(HOSTILE, b"onerror")
    time.sleep(2.5)
    other.type(f"echo {NEEDLE}", b"fleet-needle-42")
    time.sleep(2.5)
    other.type("echo last", b"last")
    other.close_session()
    shipped_closed(site, HOME, "fc-home", 2)  # exit is one too
    shipped_closed(site, OTHER, "fc-other", 5)
    records = harness.export(other.data_dir, "--session", "fc-other")
    return next(r for r in records if "fleet-needle" in r["command"])


def test_search_finds_a_command_of_another_bastion_and_the_player_lands_before_it(
    site: FleetConsoleSite, recorded: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, site, site.auditor)
    browser.get(site.web_url + "sessions")
    rows = browser.find_elements(By.CSS_SELECTOR, "#sessions tr[data-session]")
    seen = {
        (r.get_attribute("data-bastion"), r.get_attribute("data-session")) for r in rows
    }
    assert {(HOME, "fc-home"), (OTHER, "fc-other")} <= seen
    shot(browser, "sessions")
    browser.get(site.web_url + f"sessions?bastion={HOME}")
    assert "fc-other" not in by_id(browser, "sessions").text
    assert "fc-home" in by_id(browser, "sessions").text

    browser.get(site.web_url + "search")
    by_id(browser, "q").send_keys("fleet-needle")
    by_id(browser, "search").click()
    assert "1 match" in by_id(browser, "hit-count").text
    assert OTHER in by_id(browser, "hits").text  # the bastion column
    shot(browser, "search")
    browser.find_element(By.CSS_SELECTOR, "#hits a.hit").click()
    by_id(browser, "player")
    assert f"/bastions/{OTHER}/sessions/fc-other#t=" in browser.current_url
    assert by_id(browser, "bastion").text == OTHER

    player_lands_before(browser, recorded)  # from the fleet store's recording
    shot(browser, "session")

    # Stored markup is text, on the session page and in the search.
    assert HOSTILE in browser.find_element(By.ID, "commands").text
    markup_is_text(browser, site.web_url + "search?q=onerror", HOSTILE)
    base = f"/bastions/{OTHER}/sessions/fc-other"
    assert status_of(browser, f"{base}/commands.csv") == 200
    assert status_of(browser, "/sessions/fc-other") == 403  # the fleet's name a bastion


def test_a_person_who_is_not_an_auditor_gets_403_for_another_users_session(
    site: FleetConsoleSite, recorded: dict[str, Any], browser: Any
) -> None:
    sign_in(browser, site, site.person)
    base = f"/bastions/{OTHER}/sessions/fc-other"
    for url in (
        base,
        f"{base}/cast",
        f"{base}/cast?download=1",
        f"{base}/commands.json",
    ):
        assert status_of(browser, url) == 403, url
    assert status_of(browser, f"/bastions/{HOME}/sessions/fc-home") == 403
    assert status_of(browser, "/access") == 403
    browser.get(site.web_url + "sessions")
    assert "fc-other" not in by_id(browser, "sessions").text  # root's, not theirs
    browser.get(site.web_url + "search?q=fleet-needle")
    assert "0 matches" in by_id(browser, "hit-count").text


def live_in_the_fleet(
    site: FleetConsoleSite, bastion: str, tag: str, line: str
) -> None:
    """A live session on `bastion` with one command, the fleet has it and its cast."""
    b = site.bastions[bastion]
    b.open_session(site.target_user, site.target, tag)
    b.type(line, line.split()[-1].encode())
    harness.wait_for(
        lambda: (
            fleet_session(site, bastion, tag) == ("live", 1)
            and fleet_cast_bytes(site, bastion, tag) > 0
        ),
        timeout=WAIT_S,
    )


def test_live_sessions_of_the_fleet_and_terminate_on_this_bastion(
    site: FleetConsoleSite, browser: Any
) -> None:
    other, home = site.bastions[OTHER], site.bastions[HOME]
    live_in_the_fleet(site, OTHER, "fc-live-other", "echo live-one")
    sign_in(browser, site, site.auditor)
    browser.get(site.web_url + "live")
    assert "fc-live-other" in by_id(browser, "sessions").text
    browser.get(site.web_url + f"bastions/{OTHER}/sessions/fc-live-other")
    assert by_id(browser, "live-state").text == "live"
    assert "terminate it from that bastion" in by_id(browser, "elsewhere").text
    assert browser.find_elements("id", "terminate") == []

    other.type("echo live-two-$((40+2))", b"live-two-42")
    harness.wait_for(
        lambda: "live-two" in by_id(browser, "commands").text, timeout=WAIT_S
    )
    # The player's live driver, fed from the recording as the fleet gets it.
    harness.wait_for(
        lambda: "live-two-42" in by_id(browser, "player").text, timeout=WAIT_S
    )
    shot(browser, "live")
    other.close_session()
    harness.wait_for(
        lambda: by_id(browser, "live-state").text == "ended", timeout=WAIT_S
    )

    live_in_the_fleet(site, HOME, "fc-live-home", "echo home-live")
    browser.get(site.web_url + f"bastions/{HOME}/sessions/fc-live-home")
    by_id(browser, "reason").send_keys("ticket 4711: fleet console")
    by_id(browser, "terminate-button").click()
    home.shell.expect(b"ended by auditor " + site.auditor.name.encode())
    home.shell.expect(b"ticket 4711: fleet console")
    home.shell.expect("# ", timeout=WAIT_S)
    assert "terminated" in by_id(browser, "notice").text
    assert f"/bastions/{HOME}/sessions/fc-live-home" in browser.current_url
    harness.wait_for(
        lambda: fleet_session(site, HOME, "fc-live-home")[:1] == ("terminated",),
        timeout=WAIT_S,
    )
    browser.get(site.web_url + f"bastions/{HOME}/sessions/fc-live-home")
    assert by_id(browser, "status").text == "terminated"
    reason = f"terminated by auditor {site.auditor.name}: ticket 4711"
    assert reason in by_id(browser, "end-reason").text


def test_the_fleet_access_log_lists_what_was_done_and_where(
    site: FleetConsoleSite, recorded: dict[str, Any], browser: Any
) -> None:
    sign_in(browser, site, site.auditor)
    wanted = {"view", "replay", "search", "export", "terminate", "access-log"}

    def rows() -> list[str] | None:
        browser.get(site.web_url + "access")
        text = by_id(browser, "access").text.splitlines()
        mine = [r for r in text if f" {site.auditor.name} auditor " in r]
        actions = {r.split(" auditor ")[1].split()[0] for r in mine}
        return text if wanted <= actions else None

    # Logged by this bastion's agent, shipped to the fleet, read back from it.
    text = harness.wait_for(rows, timeout=WAIT_S)
    mine = [r for r in text if f" {site.auditor.name} auditor " in r]
    assert all(r.startswith(f"{HOME} ") for r in mine), mine  # the bastion column
    assert any("view" in r and f"{OTHER}/fc-other" in r for r in mine), mine
    assert any("search" in r and "fleet-needle" in r for r in mine), mine
    assert any("terminate" in r and "fc-live-home" in r for r in mine), mine
    theirs = [r for r in text if f" {site.person.name} user " in r]
    assert any("refused: not theirs to see" in r and "fc-other" in r for r in theirs)
    shot(browser, "access-log")
    # The one that names a session of the other bastion links to its page.
    from selenium.webdriver.common.by import By

    links = browser.find_elements(By.CSS_SELECTOR, "#access a")
    assert any(
        (a.get_attribute("href") or "").endswith(f"/bastions/{OTHER}/sessions/fc-other")
        for a in links
    )
