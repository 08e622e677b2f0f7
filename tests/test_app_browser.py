"""The web app end to end: the real ``semantic-pullbacks app`` process driven by headless Chromium.

Skipped (with the reason) where Debian's ``chromium`` or Playwright is missing; CI installs Chromium in ``.ci/run``.
With ``SP_UPDATE_SCREENSHOT=1`` it saves ``docs/app_screenshot.png``, the screenshot the README shows (otherwise the
screenshot goes to a temporary folder, so a test run never changes tracked files).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from semantic_pullbacks.examples import example_path

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
README_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "app_screenshot.png"
START_TIMEOUT_S = 180.0
STEP_TIMEOUT_MS = 60_000

if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install -y chromium); the browser test needs it",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
if importlib.util.find_spec("gradio") is None:  # not imported here: only the app's own process needs it
    pytest.skip("gradio is not installed (pip install 'semantic-pullbacks[app]')", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with code {process.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"the app did not serve {url} within {START_TIMEOUT_S:.0f} s:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real CLI in a subprocess on a free port: default model only, one PyTorch thread (CI cores are shared)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "semantic_pullbacks", "app", "--port", str(port), "--models", "--threads", "1"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _upload(page, path: Path) -> None:  # playwright Page
    clear = page.locator("#image button[aria-label='Remove Image']")
    if clear.count():
        clear.first.click()
    page.locator("#image input[type=file]").set_input_files(str(path))


def _explain_and_wait(page) -> str:
    """Click Explain and return the ``src`` of the rendered (decoded, non-empty) result image."""
    page.click("#explain")
    page.wait_for_function(
        "() => { const i = document.querySelector('#results img'); return i && i.complete && i.naturalWidth > 200; }",
        timeout=STEP_TIMEOUT_MS,
    )
    return page.locator("#results img").first.get_attribute("src") or ""


def test_upload_explain_reject_a_corrupt_file_and_keep_serving(app_url: str, browser, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1050})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    foreign: list[str] = []
    local = app_url.rstrip("/")
    page.on(
        "request",
        lambda r: None if r.url.startswith((local, "data:", "blob:")) else foreign.append(r.url),
    )
    page.goto(app_url)
    page.wait_for_selector("#explain")

    # a valid upload: top-5 shown, an explanation rendered, the figure downloadable as a PNG
    _upload(page, example_path("chelsea"))
    page.wait_for_selector("#top5 >> text=Egyptian cat")
    first = _explain_and_wait(page)
    assert first
    page.wait_for_selector("#summary >> text=SoftPullback")
    with page.expect_download() as download:
        page.click("#download")
    png = Path(download.value.path()).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    update = os.environ.get("SP_UPDATE_SCREENSHOT") == "1"
    screenshot = README_SCREENSHOT if update else tmp_path / "app_screenshot.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # a corrupt file: a clear message, no result
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not really an image" * 20)
    _upload(page, corrupt)
    page.wait_for_selector(".toast-body >> text=not a supported image")
    assert page.locator("#results img").count() == 0

    # the app still serves: another valid image is classified and explained
    _upload(page, example_path("coffee"))
    page.wait_for_selector("#top5 >> text=espresso")
    second = _explain_and_wait(page)
    assert second and second != first
    assert foreign == [], f"the page contacted other hosts (it must work offline): {foreign}"
    page.close()


def test_text_tab_explains_a_similarity_and_zero_shot_labels(app_url: str, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(STEP_TIMEOUT_MS * 3)  # the first request loads the text model
    foreign: list[str] = []
    local = app_url.rstrip("/")
    page.on("request", lambda r: None if r.url.startswith((local, "data:", "blob:")) else foreign.append(r.url))
    page.goto(app_url)
    page.get_by_role("tab", name="Text").click()
    page.click("#text-explain")
    page.wait_for_selector("#text-result span.tok >> text=guitar")
    page.wait_for_selector("#text-summary >> text=Top words: guitar")
    page.get_by_label("Zero-shot labels").check()
    page.locator("#text-input textarea").fill("A wonderful, moving film.")
    page.wait_for_function("() => document.querySelector('#text-other textarea').value.includes('negative')")
    page.click("#text-explain")
    page.wait_for_selector("#text-summary >> text=This review is positive.")
    page.locator("#text-input textarea").fill("   ")
    page.click("#text-explain")
    page.wait_for_selector(".toast-body >> text=Text is empty")
    assert foreign == [], f"the page contacted other hosts (it must work offline): {foreign}"
    page.close()


def test_text_tab_generates_and_explains_with_a_local_model_folder(app_url: str, browser, tmp_path: Path) -> None:
    from text.test_generate import tiny_causal, word_tokenizer

    folder = tmp_path / "tiny-llama"
    tiny_causal("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(STEP_TIMEOUT_MS * 3)
    page.goto(app_url)
    page.get_by_role("tab", name="Text").click()
    page.get_by_label("Generate and explain (local model folder)").check()
    page.wait_for_function("() => document.querySelector('#text-other textarea').value === ''")
    page.locator("#text-input textarea").fill("the cat sat on the")
    page.locator("#text-other textarea").fill(str(folder))
    page.locator("#text-new-tokens input").fill("3")
    page.click("#text-explain")
    page.wait_for_selector("#text-summary >> text=generated")
    assert page.locator("#text-result .sp-matrix tr").count() == 1 + 3  # the header and 3 generated tokens
    page.locator("#text-other textarea").fill(str(tmp_path / "missing"))
    page.click("#text-explain")
    page.wait_for_selector(".toast-body >> text=not a folder on this machine")
    page.close()


def test_neuron_mode_explains_a_channel_of_an_inner_layer(app_url: str, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.goto(app_url)
    page.wait_for_selector("#explain")
    _upload(page, example_path("chelsea"))
    page.wait_for_selector("#top5 >> text=Egyptian cat")
    page.click("#neuron-mode button")  # unfold the accordion
    page.locator("#neuron-layer input").fill("_blocks.5")
    # pick the option itself: Enter right after typing can land before the list has filtered, keeping the default
    page.locator("#neuron-layer").get_by_role("option", name="_blocks.5", exact=True).click()
    page.locator("#neuron-channel input").fill("3")
    page.click("#explain-neuron")
    page.wait_for_function(
        "() => { const i = document.querySelector('#neuron-results img'); "
        "return i && i.complete && i.naturalWidth > 200; }",
        timeout=STEP_TIMEOUT_MS,
    )
    summary = page.locator("#neuron-summary")
    summary.locator("text=Most active channels").wait_for()
    assert "_blocks.5:3" in summary.inner_text()
    page.close()
