"""`contextedit ui` in a real browser: headless Chromium (Debian's ``chromium`` and its
``chromedriver``, driven by Selenium; nothing is downloaded) opens the page, takes the sample clip,
previews its frames, captions it, tunes 2 steps, edits one prompt, waits for the source | edit
player, screenshots the page, scores the edit, then paints a mask over the run's first frame and
edits with it. Skips, saying why, where Selenium, Chromium or
its driver is missing, as tests/test_report.py does.

``CONTEXTEDIT_UI_SCREENSHOT=PATH`` keeps the screenshot there (the README's
examples/web-ui.png is one, made with ``CONTEXTEDIT_UI_MODEL=tiny``: the embedded model that edits
the shapes world; the default, tiny-random, draws noise)."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ui_server

SOURCE_PROMPT = "a red circle moving right on a black background"
TARGET = "a blue circle moving right on a black background"


def _chromium() -> tuple[str, str] | None:
    """(browser, driver) on PATH or where Debian puts them; None when either is missing."""
    browser = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver") or next((p for p in ("/usr/lib/chromium/chromedriver",) if os.path.isfile(p)), None)
    return (browser, driver) if browser and driver else None


@pytest.fixture()
def browser(tmp_path):
    pytest.importorskip("gradio", reason="the web UI needs the ui extra: pip install -e \".[ui]\"")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the test extra)")
    found = _chromium()
    if found is None:
        pytest.skip("Chromium or its driver not installed: no chromium/chromium-browser/google-chrome and chromedriver "
                    "on PATH (Debian: apt-get install chromium chromium-driver)")
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--window-size=1400,1750", "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    try:  # an explicit driver path: Selenium Manager never downloads one
        driver = webdriver.Chrome(service=Service(found[1]), options=options)
    except WebDriverException as exc:
        pytest.skip(f"Chromium failed to start: {str(exc.msg or exc).strip().splitlines()[0]}")
    try:
        yield driver
    finally:
        driver.quit()


def _not_blank(shot: Path) -> None:
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    assert pixels.std() > 20, f"screenshot is nearly uniform (pixel std {pixels.std():.1f})"
    common = Counter(map(tuple, pixels[::7].tolist())).most_common(1)[0][0]
    differing = np.any(pixels != np.array(common), axis=1).mean()
    assert differing > 0.05, f"screenshot is nearly blank: {differing:.2%} of pixels differ from {common}"


@pytest.mark.slow
def test_sample_tune_edit_and_score_in_headless_chromium(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    model = os.environ.get("CONTEXTEDIT_UI_MODEL", "tiny-random")
    with ui_server(tmp_path, "--caption-model", "tiny", "--clip-model", "tiny", model=model, edit_steps=5) as (url, runs, _):
        wait = WebDriverWait(browser, 60, poll_frequency=0.1)
        css = browser.find_elements

        def value(selector: str) -> str:
            return browser.find_element(By.CSS_SELECTOR, selector).get_attribute("value") or ""

        def toast() -> str:
            return " ".join(e.text for e in css(By.CSS_SELECTOR, ".toast-body"))

        browser.get(url)
        wait.until(lambda _: css(By.ID, "sample")).pop().click()
        wait.until(lambda _: css(By.CSS_SELECTOR, "#clip video"))
        wait.until(lambda _: len(css(By.CSS_SELECTOR, "#taken img")) == 8)  # the preview: tune's default 8 frames
        assert "indices 0, 2, 4, 6, 8, 10, 12, 14" in browser.find_element(By.ID, "taken-info").text

        browser.find_element(By.ID, "edit").click()  # no run, no prompt: the CLI's line in the page
        wait.until(lambda _: "choose a run" in toast())
        for close in css(By.CSS_SELECTOR, ".toast-close"):  # it covers the buttons at the top right
            close.click()
        wait.until(lambda _: not css(By.CSS_SELECTOR, ".toast-body"))

        browser.find_element(By.ID, "caption").click()
        wait.until(lambda _: value("#prompt textarea"))  # the tiny BLIP-2's caption…
        prompt = browser.find_element(By.CSS_SELECTOR, "#prompt textarea")
        prompt.clear()
        prompt.send_keys(SOURCE_PROMPT)  # …replaced by what the clip shows, as a user would
        steps = browser.find_element(By.CSS_SELECTOR, "#steps input")
        steps.clear()
        steps.send_keys("2")
        browser.find_element(By.ID, "tune").click()
        wait.until(lambda _: value("#run-name textarea") == "red-circle")
        assert (runs / "red-circle" / "manifest.json").is_file()

        browser.find_element(By.CSS_SELECTOR, "#targets textarea").send_keys(TARGET)
        browser.find_element(By.ID, "edit").click()
        wait.until(lambda _: browser.execute_script(  # the result plays, and nothing on the page is pending
            "const v = document.querySelector('#player video');"
            "return v !== null && v.readyState >= 2 && !v.paused && v.currentTime > 0"
            " && [...document.querySelectorAll('[data-testid=status-tracker]')].every(t => t.classList.contains('hide'))"))
        time.sleep(1.5)  # the player's controls fade out after it starts
        shot = tmp_path / "ui.png"
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(shot))
        _not_blank(shot)
        if os.environ.get("CONTEXTEDIT_UI_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["CONTEXTEDIT_UI_SCREENSHOT"])

        browser.find_element(By.ID, "score").click()  # eval's report, in a frame, its GIFs from the runs folder
        wait.until(lambda _: browser.execute_script(
            "const f = document.querySelector('#report iframe'); const d = f && f.contentDocument;"
            "return d !== null && d.images.length >= 2 && [...d.images].every(i => i.complete && i.naturalWidth > 0)"))

        # a mask drawn on the page: a stroke over the run's first frame becomes the edit's mask
        next(e for e in css(By.CSS_SELECTOR, ".label-wrap") if "Edit settings" in e.text).click()
        canvas = wait.until(lambda _: css(By.CSS_SELECTOR, "#drawn-mask canvas"))[0]
        time.sleep(0.5)  # the accordion opens
        ActionChains(browser).move_to_element_with_offset(canvas, -20, 0).click_and_hold().move_by_offset(40, 0).release().perform()
        browser.find_element(By.ID, "edit").click()
        edits = runs / "red-circle" / "edits"
        wait.until(lambda _: list(edits.glob("*_mask-*/*.source-edit.mp4")))
        drawn = np.asarray(Image.open(next((edits / "masks").glob("drawn-*.png"))))
        assert drawn.shape == (64, 64) and 0 < drawn.mean() < 255  # the run's frame size, partly painted
