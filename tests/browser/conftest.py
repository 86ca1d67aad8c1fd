"""A real gunicorn on the starter catalog, its admin.sock forwarded to loopback TCP (as `ssh -L`
would), and one headless Debian Chromium driven by selenium for the whole session."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from embedder.service import Service
from tests.browser.forward import Forwarder
from tests.integration import server as srv

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",  # screenshots as wide as the layout, no 15 px gutter
    "--window-size=1280,900",
    "--lang=en-US",
)
SHOTS = srv.ROOT / "artifacts" / "browser"


@pytest.fixture(scope="session")
def admin_server(
    tmp_path_factory: pytest.TempPathFactory, models_root: Path, starter_service: Service
) -> Iterator[srv.Server]:
    """gunicorn with 2 workers on the starter models (built by `starter_service`), TCP on."""
    server = srv.start(tmp_path_factory.mktemp("admin"), models_root, workers=2)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tunnel(admin_server: srv.Server) -> Iterator[Forwarder]:
    with Forwarder(admin_server.sock("admin.sock"), lifetime_s=300) as fwd:
        yield fwd


class Browser:
    """The selenium driver plus what the tests need around it: console logs and screenshots."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    def open(self, path: str = "/") -> None:
        self.driver.get(self.base_url + path)

    def console(self) -> list[dict[str, Any]]:
        """Console entries since the last call (reading drains chromedriver's buffer)."""
        return list(self.driver.get_log("browser"))

    def console_errors(self) -> list[dict[str, Any]]:
        return [e for e in self.console() if e.get("level") == "SEVERE"]

    def wait(self, what: Callable[[Any], Any], timeout: float = 60.0, message: str = "") -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(what, message)

    def color_scheme(self, scheme: str) -> None:
        self.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )

    def screenshot(self, name: str) -> Path:
        """The whole page, beyond the viewport, as a PNG under artifacts/browser/."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.driver.execute_script("window.scrollTo(0, 0)")  # the sticky header stays on top
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": size["height"],
                    "scale": 1,
                },
            },
        )
        path = SHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory, tunnel: Forwarder) -> Iterator[Browser]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian chromium and chromium-driver are not installed (make browser-deps)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service as DriverService

    profile = tmp_path_factory.mktemp("chromium-profile")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A path to the driver keeps Selenium Manager (which would download one) out of it.
    service = DriverService(
        executable_path=str(CHROMEDRIVER), log_output=str(profile.parent / "chromedriver.log")
    )
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(120)
    try:
        yield Browser(driver, tunnel.url)
    finally:
        driver.quit()


@pytest.fixture
def dashboard(browser: Browser) -> Iterator[Browser]:
    """The dashboard freshly loaded in light mode, its status at "ok", its pickers filled."""
    browser.color_scheme("light")
    browser.driver.set_window_size(1280, 900)
    browser.open("/")
    browser.wait(
        lambda d: d.find_element("id", "state-badge").get_attribute("data-state") == "ok",
        message="the status panel never reached ok",
    )
    browser.wait(
        lambda d: (
            d.execute_script("return document.getElementById('embed-model').options.length") > 0
        ),
        message="models.describe never filled the pickers",
    )
    yield browser
    errors = browser.console_errors()
    assert not errors, json.dumps(errors, indent=1)
