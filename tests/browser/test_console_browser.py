"""The console in headless Chromium against a served LocalStack (sandbox embedded): start an
onboarding from /new and watch its page reach succeeded without a reload; park one with a
vendor outage, resume it from the parked page, watch it succeed; screenshots on the way."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from chimera.stack import LocalStack
from sandbox.effects import side_effects
from sandbox.faults import FaultPlan
from shared.model import RunStatus
from shared.settings import Settings
from tests.e2e.conftest import ONE_ONBOARDING, body

pytestmark = pytest.mark.slow
MARKER = "window.__chimeraNotReloaded"


@pytest.fixture
def stack(tmp_path):
    stack = LocalStack(
        Settings(
            home=tmp_path / "home",
            local_backoff_scale=0.002,
            # Every attempt reaches the sandbox: the outage parks the step, not the breaker.
            breaker_window=1000,
            breaker_minimum_calls=1000,
        ),
        serve_port=0,
    ).start()
    yield stack
    stack.stop()


def _faults(stack: LocalStack, spec: str) -> None:
    """Change the embedded sandbox's faults from now on."""
    assert stack.sandbox is not None
    stack.sandbox.app.plan = dataclasses.replace(FaultPlan.parse(spec), t0=time.time())


def _status(driver) -> str:
    # Read by script: the live swap replaces the element between a lookup and a read.
    return driver.execute_script(
        "const s = document.getElementById('run-status'); return s ? s.textContent : '';"
    )


def _state_text(driver) -> str:
    return driver.execute_script("return document.querySelector('section.state').innerText;")


def _start_onboarding(driver, stack: LocalStack, i: int) -> str:
    driver.get(f"{stack.url}/new")
    for name, value in body(i).items():
        field = driver.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "form.new button[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda d: "/run/run-" in d.current_url)
    return driver.current_url.rsplit("/", 1)[1]


def _watch_until(driver, status: str, timeout: float = 40) -> list[str]:
    """The statuses the page showed, without reloading, until it shows `status`."""
    seen: list[str] = []

    def shows(d) -> bool:
        current = _status(d)
        if not seen or seen[-1] != current:
            seen.append(current)
        return current == status

    WebDriverWait(driver, timeout, poll_frequency=0.1).until(shows)
    assert driver.execute_script(f"return {MARKER} === true"), "the page was reloaded"
    return seen


def test_an_onboarding_started_from_the_page_reaches_succeeded_live_and_a_parked_one_resumes(
    browser, stack, screenshots: Path
):
    driver = browser
    driver.get(stack.console_url)  # signs in, then drops the token from the address bar
    assert "token=" not in driver.current_url
    assert driver.find_element(By.TAG_NAME, "h1").text == "Runs"

    # Slow enough that the page is up before the run ends: what it shows later came live.
    _faults(stack, "jira.latency_ms=1500")
    run_id = _start_onboarding(driver, stack, 1)
    driver.execute_script(f"{MARKER} = true")
    assert _status(driver) != "succeeded"
    driver.save_screenshot(str(screenshots / "run-page-running.png"))
    seen = _watch_until(driver, "succeeded")
    assert seen[0] != "succeeded" and seen[-1] == "succeeded"
    assert run_id in driver.find_element(By.TAG_NAME, "h1").text
    driver.save_screenshot(str(screenshots / "run-page-succeeded.png"))
    assert stack.runtime.store.load(run_id).status is RunStatus.SUCCEEDED

    # Jira is down for good: the step spends every attempt and parks the run.
    _faults(stack, "jira.error=1")
    parked_id = _start_onboarding(driver, stack, 2)
    driver.execute_script(f"{MARKER} = true")
    _watch_until(driver, "parked")
    assert (
        "gave up after"
        in driver.find_element(By.ID, "state-title").find_element(By.XPATH, "..").text
    )
    driver.save_screenshot(str(screenshots / "run-page-parked.png"))

    _faults(stack, "")  # Jira is back
    driver.get(f"{stack.url}/parked")
    driver.save_screenshot(str(screenshots / "parked.png"))
    driver.find_element(By.CSS_SELECTOR, f"button[aria-label='Resume {parked_id}']").click()
    WebDriverWait(driver, 10).until(lambda d: "/parked" in d.current_url)
    driver.get(f"{stack.url}/run/{parked_id}")
    driver.execute_script(f"{MARKER} = true")
    _watch_until(driver, "succeeded")
    driver.save_screenshot(str(screenshots / "run-page-resumed.png"))
    assert side_effects(stack.base_settings.home)[parked_id] == ONE_ONBOARDING

    driver.get(f"{stack.url}/")
    listed = driver.find_element(By.CSS_SELECTOR, "table.runs tbody").text
    assert run_id in listed and parked_id in listed  # whole ids
    driver.save_screenshot(str(screenshots / "runs-list.png"))
    for name in ("runs-list", "run-page-succeeded", "parked"):
        assert (screenshots / f"{name}.png").stat().st_size > 0
