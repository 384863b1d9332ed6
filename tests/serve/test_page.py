"""The search page in a real browser (Debian's chromium + chromium-driver through selenium) against a live
server over a tiny real workspace: type a query, wait for the grid, filter by similarity, scroll for more,
search by an uploaded image, and keep the state in the URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmgen.serve.app import ServerConfig


def test_type_a_query_and_see_the_grid(browser: Any, tmp_path: Path, tiny_encoder: Any, build_tiny_workspace: Any,
                                       live_server: Any) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    ws, manifest = build_tiny_workspace(tmp_path, tiny_encoder)
    live = live_server(ws, ServerConfig())
    browser.get(live.url + "/?page=10")
    browser.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#index option"))
    Select(browser.find_element(By.ID, "to")).select_by_value("text")
    box = browser.find_element(By.ID, "q")
    box.send_keys("a red circle, drawing 2")
    browser.find_element(By.CSS_SELECTOR, "#form button[type=submit]").click()
    hits = browser.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#grid .hit"))
    assert len(hits) == 10  # one page
    assert hits[0].find_element(By.CLASS_NAME, "caption").text == "a red circle, drawing 2"  # its own text first
    assert float(hits[0].get_attribute("data-score")) > 0.99
    assert "q=a+red+circle%2C+drawing+2" in browser.current_url and "to=text" in browser.current_url

    # the minimum-similarity slider hides what falls below it and says how many pass
    browser.execute_script("const m = document.getElementById('min'); m.value = 0.99; m.oninput();")
    status = browser.find_element(By.ID, "status").text
    visible = [h for h in browser.find_elements(By.CSS_SELECTOR, "#grid .hit") if h.is_displayed()]
    assert status.startswith(f"{len(visible)} of 10 hits") and 1 <= len(visible) < 10
    browser.execute_script("const m = document.getElementById('min'); m.value = 0; m.oninput();")

    # infinite scroll: reaching the bottom fetches the next page
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight); window.dispatchEvent(new Event('scroll'));")
    browser.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .hit")) >= 20)

    # the URL keeps the state: opening it again runs the same search
    browser.get(browser.current_url)
    again = browser.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#grid .hit"))
    assert again[0].find_element(By.CLASS_NAME, "caption").text == "a red circle, drawing 2"

    # hybrid retrieval with hits folded by concept group, kept in the URL
    Select(browser.find_element(By.ID, "retrieval")).select_by_value("hybrid")
    browser.find_element(By.ID, "group").click()
    browser.find_element(By.CSS_SELECTOR, "#form button[type=submit]").click()
    browser.until(lambda d: "by=hybrid" in d.current_url and "group=1" in d.current_url)
    folded = browser.until(lambda d: [h for h in d.find_elements(By.CSS_SELECTOR, "#grid .hit .score")
                                      if "5 styles" in h.text])  # fmt: skip
    assert len(folded) == len(browser.find_elements(By.CSS_SELECTOR, "#grid .hit"))  # each hit is a whole group
    browser.find_element(By.ID, "group").click()
    Select(browser.find_element(By.ID, "retrieval")).select_by_value("vector")

    # query by an uploaded image: image hits with thumbnails that load, the image itself first
    Select(browser.find_element(By.ID, "to")).select_by_value("image")
    browser.find_element(By.ID, "file").send_keys(str(manifest.parent / "blue-square-3.png"))
    browser.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#grid .hit img"))
    first = browser.find_element(By.CSS_SELECTOR, "#grid .hit")
    assert first.find_element(By.CLASS_NAME, "caption").text == "a blue square, drawing 3"
    browser.until(lambda d: d.execute_script("const i = document.querySelector('#grid .hit img');"
                                              "return i.complete && i.naturalWidth > 0;"))  # fmt: skip
    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
