"""A live `mmgen serve` for the server tests: uvicorn in a thread on a free loopback port."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


class Live:
    """A uvicorn server in a thread, on a free loopback port."""

    def __init__(self, ws: Any, config: Any) -> None:
        import uvicorn

        from mmgen.serve.routes import create_app
        from mmgen.store.db import open_store

        self.store = open_store(ws.db_url)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(ws, self.store, config), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)

    def request(self, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None,
                method: str | None = None) -> tuple[int, Any]:  # fmt: skip
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                payload = resp.read()
                kind = resp.headers.get("content-type", "")
                return resp.status, (json.loads(payload) if "json" in kind else payload)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.store.close()


@pytest.fixture()
def live_server() -> Iterator[Any]:
    """start(ws, config) -> a Live server, closed when the test ends."""
    started: list[Live] = []

    def start(ws: Any, config: Any) -> Live:
        started.append(Live(ws, config))
        return started[-1]

    yield start
    for live in started:
        live.close()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra has it)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chrome'}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)  # no selenium-manager download
    driver.set_page_load_timeout(60)
    from selenium.webdriver.support.ui import WebDriverWait

    driver.until = lambda condition, timeout=60: WebDriverWait(driver, timeout).until(condition)  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()
