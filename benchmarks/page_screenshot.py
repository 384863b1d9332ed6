"""Screenshot of the search page on a workspace (the README's picture), through headless Debian chromium.

    python benchmarks/page_screenshot.py [--workspace indexes] [--query "red apple"] [--by hybrid] [--group]
        [--where style=twemoji] [-o docs/serve-page.png]

It starts `mmgen serve` on a free loopback port, opens the page with the query in its URL (the page's
own shareable state), waits until the grid's thumbnails have loaded and saves the window.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import free_port, start_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, default=ROOT / "indexes")
    parser.add_argument("--query", default="red apple")
    parser.add_argument("--by", choices=("vector", "hybrid", "keyword"), default="hybrid")
    parser.add_argument("--group", action="store_true")
    parser.add_argument("--where", default="")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "serve-page.png")
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    server = start_server(args.workspace, port)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    try:
        state = {"q": args.query, "to": "image", "by": args.by, "where": args.where, "group": "1" if args.group else ""}
        driver.get(f"http://127.0.0.1:{port}/?{urllib.parse.urlencode(state)}")
        WebDriverWait(driver, 120).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .hit img")) >= 10)
        WebDriverWait(driver, 120).until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#grid .hit img')].slice(0, 24).every(i => i.complete && i.naturalWidth);"))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        print(f"saved {args.out}")
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
