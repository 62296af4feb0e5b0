"""Headless Chromium driven by Selenium, or a skip that names what is missing (`make test`
installs Debian's chromium and chromium-driver where it can)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")


def _found(names: tuple[str, ...]) -> str | None:
    for name in names:
        path = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
        if path:
            return path
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the browser tests leave their screenshots (git-ignored), said once."""
    folder = ROOT / ".chimera" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots in {folder}")
    return folder


@pytest.fixture
def browser() -> Iterator[object]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("the browser tests need selenium (pip install 'selenium>=4.20,<5')")
    chromium, driver_path = _found(CHROMIUM), _found(CHROMEDRIVER)
    missing = [n for n, p in (("chromium", chromium), ("chromium-driver", driver_path)) if not p]
    if missing:
        pytest.skip(
            f"the browser tests need Debian's {' and '.join(missing)} "
            "(apt-get install chromium chromium-driver; `make test` does it as root)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root on CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1100",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
