"""The web way in, everything real: sign in, token, web terminal, audit record.

Headless Chromium signs in on audit-web with a test user's Unix password,
takes a token, opens shellinaboxd's page and types it; audit-shell
--token-login redeems it and opens the target sshd; the agent records the
command with the web user as bastion user. A used, a wrong and an expired
token are each refused. A screenshot of the terminal is kept as an artifact.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import harness, web_harness
from tests.web_harness import WebBastion

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = harness.REPO / "build" / "artifacts"
WAIT_S = 20.0


@pytest.fixture(scope="module")
def web() -> Iterator[WebBastion]:
    with web_harness.web_bastion() as b:
        yield b


@pytest.fixture(scope="module")
def agent(web: WebBastion) -> Iterator[harness.AgentProcess]:
    with harness.agent(web.workdir / "data", "--config", str(web.agent_config)) as a:
        yield a


@pytest.fixture
def browser(web: WebBastion, tmp_path: Path) -> Iterator[Any]:
    with web_harness.chromium(tmp_path / "chromium") as driver:
        driver.set_page_load_timeout(WAIT_S)
        yield driver
    for name in ("audit-web.log", "shellinaboxd.log"):  # shown if the test failed
        print(f"--- {name}\n{(web.workdir / name).read_text(errors='replace')}")


def by_id(driver: Any, name: str) -> Any:
    """The element, once the page that has it is there (a click may still load)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S).until(
            expected_conditions.presence_of_element_located((By.ID, name))
        )
    except TimeoutException:
        page = screen(driver)
        raise AssertionError(f"no #{name} on {driver.current_url}:\n{page}") from None


def screen(driver: Any) -> str:
    """What shellinabox's terminal shows now."""
    text = driver.execute_script("return document.body ? document.body.innerText : ''")
    return str(text or "").replace("\xa0", " ")


def wait_screen(driver: Any, text: str) -> str:
    def shows() -> str:
        now = screen(driver)
        return now if text in now else ""

    try:
        return harness.wait_for(shows, timeout=WAIT_S)  # type: ignore[no-any-return]
    except TimeoutError:
        raise AssertionError(f"{text!r} not on the screen:\n{screen(driver)}") from None


def type_keys(driver: Any, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(keys).perform()


def sign_in(driver: Any, web: WebBastion, password: str) -> None:
    driver.get(web.web_url + "sign-in")
    by_id(driver, "username").send_keys(web.person.name)
    by_id(driver, "password").send_keys(password)
    by_id(driver, "sign-in").click()


def take_token(driver: Any, web: WebBastion) -> tuple[str, float]:
    from selenium.webdriver.common.by import By

    from agent.records import parse_iso

    driver.get(web.web_url)
    label = f"{web.target_user.name}@web1"
    driver.find_element(By.CSS_SELECTOR, f'button[data-target="{label}"]').click()
    expires = by_id(driver, "expires").get_attribute("datetime")
    return by_id(driver, "token").text, parse_iso(expires)


def open_terminal(driver: Any, web: WebBastion) -> None:
    """shellinabox's page in a new tab, once audit-shell asks for the token."""
    driver.switch_to.new_window("tab")
    driver.get(web.terminal_url)
    wait_screen(driver, "Token:")


def redeem_in_terminal(driver: Any, web: WebBastion, token: str) -> None:
    open_terminal(driver, web)
    type_keys(driver, token + "\n")


def test_token_opens_an_audited_session_once(
    web: WebBastion, agent: harness.AgentProcess, browser: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    sign_in(browser, web, "not-" + web.person.password)
    assert "sign-in failed" in by_id(browser, "error").text
    sign_in(browser, web, web.person.password)
    assert by_id(browser, "user").text == web.person.name
    assert "secret1" not in browser.page_source  # not granted: not offered

    expiring, expires_at = take_token(browser, web)
    page = browser.current_window_handle
    # The terminal first, then the token: its short life is not spent waiting
    # for a busy machine to start audit-shell.
    open_terminal(browser, web)
    terminal = browser.current_window_handle
    browser.switch_to.window(page)
    token, _ = take_token(browser, web)
    browser.switch_to.window(terminal)
    type_keys(browser, token + "\n")
    shown = wait_screen(browser, "$ ")
    tag = shown.split("(session ")[1].split(")")[0]
    type_keys(browser, "echo via-$((6*7))-web\n")
    wait_screen(browser, "via-42-web")
    shot = tmp_path / "web-terminal.png"
    browser.save_screenshot(str(shot))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "web-terminal.png")
    type_keys(browser, "exit\n")
    wait_screen(browser, "connection closed")

    records = harness.wait_for(
        lambda: harness.export(agent.data_dir, "--session", tag), timeout=WAIT_S
    )
    record = records[0]
    assert record["command"] == "echo via-$((6*7))-web"
    assert record["bastion_user"] == web.person.name  # the web user
    assert record["origin"] == "web-token"
    assert record["remote_user"] == web.target_user.name
    assert record["inventory_host"] == "web1"
    assert record["client_addr"] is not None

    # Used, wrong, expired: each refused, and no shell behind any of them.
    redeem_in_terminal(browser, web, token)
    wait_screen(browser, "token refused: token already used")
    redeem_in_terminal(browser, web, "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-4567")
    wait_screen(browser, "token refused: unknown token")
    time.sleep(max(0.0, expires_at - time.time() + 0.2))
    redeem_in_terminal(browser, web, expiring)
    wait_screen(browser, "token refused: token expired")
    print(f"web end to end: {time.monotonic() - started:.1f}s")


def test_the_token_page_says_it_is_recorded_copies_and_counts_down(
    web: WebBastion, browser: Any
) -> None:
    """What the person sees before the terminal: a notice that the session is
    recorded, the bastion's name, a copy button and the time left, live."""
    sign_in(browser, web, web.person.password)
    token, expires_at = take_token(browser, web)
    notice = by_id(browser, "recorded")
    assert notice.is_displayed() and "This session is recorded." in notice.text
    assert web.person.name in notice.text
    assert by_id(browser, "bastion").text == web_harness.BASTION

    def seconds_left() -> int:
        minutes, seconds = by_id(browser, "countdown").text.split(":")
        return int(minutes) * 60 + int(seconds)

    first = seconds_left()
    assert 0 < first <= web_harness.TOKEN_TTL_S
    harness.wait_for(lambda: seconds_left() < first, timeout=5)  # it runs

    origin = web.web_url.rstrip("/")
    browser.execute_cdp_cmd(
        "Browser.grantPermissions",
        {
            "origin": origin,
            "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"],
        },
    )
    by_id(browser, "copy").click()
    harness.wait_for(lambda: by_id(browser, "copied").text == "Copied", timeout=5)
    pasted = browser.execute_async_script(
        "const done = arguments[0];"
        "navigator.clipboard.readText().then(done, e => done('error: ' + e));"
    )
    assert pasted == token
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "web-token.png"))

    time.sleep(max(0.0, expires_at - time.time()))
    harness.wait_for(lambda: "expired" in by_id(browser, "countdown").text, timeout=5)
    assert not by_id(browser, "copy").is_enabled()
