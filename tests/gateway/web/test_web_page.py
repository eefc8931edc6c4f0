"""The web page in a real headless Chromium (Debian's) against the running gateway.

Screenshots of each panel are saved under artifacts/screenshots/ as test artifacts.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support import REPO, ServerProcess

ARTIFACTS = REPO / "artifacts" / "screenshots"


def chromium(extra_args: list[str] = ()) -> WebDriver:  # type: ignore[assignment]
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "Debian chromium and chromium-driver are required (scripts/setup.d/60-*)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={profile}",
        "--window-size=1100,900",
        *extra_args,
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def wait_for(predicate: Callable[[], object], timeout: float = 60, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def attr(driver: WebDriver, selector: str, name: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, selector).get_attribute(name) or ""


def test_status_strip_shows_engine_and_models(browser: WebDriver, gateway: ServerProcess) -> None:
    browser.get(gateway.url + "/")
    wait_for(lambda: "ok" in browser.find_element(By.ID, "status-health").text, what="health pill")
    assert "embedded" in browser.find_element(By.ID, "status-engine").text
    assert "tts:" in browser.find_element(By.ID, "status-models").text
    assert browser.find_element(By.ID, "status-gpu").text == "no GPU"
    # Everything the page needs comes from the gateway itself: no CDN, works offline.
    for el in browser.find_elements(By.CSS_SELECTOR, "script[src], link[href]"):
        src = el.get_attribute("src") or el.get_attribute("href") or ""
        assert src.startswith(gateway.url), src


def test_read_aloud_plays_highlights_and_pauses(browser: WebDriver, gateway: ServerProcess) -> None:
    browser.get(gateway.url + "/")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#read-voice option"), what="voices")
    text = browser.find_element(By.ID, "read-text")
    text.clear()
    # Long enough that the stream is still running when the test pauses it, even on a busy machine.
    filler = " ".join(f"Sentence number {i} keeps the reader busy for a while." for i in range(2, 40))
    text.send_keys("This is the first sentence of the test. " + filler)
    browser.find_element(By.ID, "read-play").click()
    wait_for(lambda: int(attr(browser, "#read-stats", "data-frames")) > 5, what="audio frames")
    wait_for(lambda: int(attr(browser, "#read-view", "data-highlighted")) >= 0, what="a highlighted sentence")
    # Read in one script call: the sentence's span is re-rendered at every word mark, so an element handle
    # found first can be stale by the time its text is read.
    current = browser.execute_script(
        "const s = document.querySelector('#read-view span.current'); return s ? s.textContent : null;"
    )
    assert current is not None and current.startswith("This is the first"), current
    browser.find_element(By.ID, "read-pause").click()
    wait_for(lambda: attr(browser, "#read-state", "data-state") == "paused", what="paused state")
    browser.save_screenshot(str(ARTIFACTS / "read-aloud.png"))
    frames_paused = int(attr(browser, "#read-stats", "data-frames"))
    time.sleep(0.5)
    assert int(attr(browser, "#read-stats", "data-frames")) == frames_paused  # nothing arrives while paused
    browser.find_element(By.ID, "read-resume").click()
    wait_for(lambda: attr(browser, "#read-state", "data-state") in ("playing", "done"), what="resumed")
    # Word marks drive a word highlight inside the sentence, pointing into the original text.
    # The spans are re-rendered for every word: read both in one script call, not as element handles.
    sentence, word = wait_for(
        lambda: browser.execute_script(
            "const w = document.querySelector('#read-view span.current span.word');"
            "return w ? [w.parentElement.textContent, w.textContent] : null;"
        ),
        what="a highlighted word",
    )
    assert word and word in sentence
    wait_for(lambda: attr(browser, "#read-state", "data-state") == "done", what="complete", timeout=90)
    assert int(attr(browser, "#read-stats", "data-frames")) > frames_paused


def test_transcribe_panel_shows_text_and_segments(
    browser: WebDriver, gateway: ServerProcess, tmp_path: Path
) -> None:
    wav = httpx.post(gateway.url + "/read", json={"text": "Transcription works in the browser."}, timeout=60)
    path = tmp_path / "clip.wav"
    path.write_bytes(wav.content)
    browser.get(gateway.url + "/")
    browser.find_element(By.ID, "tab-transcribe").click()
    browser.find_element(By.ID, "tr-file").send_keys(str(path))
    browser.find_element(By.ID, "tr-go").click()
    wait_for(lambda: browser.find_element(By.ID, "tr-text").text, what="transcript")
    assert "transcription works" in browser.find_element(By.ID, "tr-text").text.lower()
    assert browser.find_elements(By.CSS_SELECTOR, "#tr-segments tbody tr")
    browser.save_screenshot(str(ARTIFACTS / "transcribe.png"))


def test_tabs_are_keyboard_operable(browser: WebDriver, gateway: ServerProcess) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.get(gateway.url + "/")
    browser.find_element(By.ID, "tab-read").send_keys(Keys.ARROW_RIGHT)
    wait_for(lambda: attr(browser, "#tab-talk", "aria-selected") == "true", what="talk tab selected")
    assert browser.find_element(By.ID, "panel-talk").is_displayed()
    assert not browser.find_element(By.ID, "panel-read").is_displayed()
    # Every form control has an accessible label.
    for el in browser.find_elements(By.CSS_SELECTOR, "textarea, select, input[type=file], input[type=range]"):
        el_id = el.get_attribute("id")
        labelled = browser.find_elements(By.CSS_SELECTOR, f"label[for='{el_id}']") or browser.execute_script(
            "return arguments[0].closest('label') !== null", el
        )
        assert labelled, el_id


def test_talk_panel_with_a_wav_file_as_the_microphone(gateway: ServerProcess, tmp_path: Path) -> None:
    import io
    import wave

    question = {"text": "What color is the sky on a clear day?"}
    speech = httpx.post(gateway.url + "/read", json=question, timeout=60)
    with wave.open(io.BytesIO(speech.content)) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    mic = tmp_path / "mic.wav"
    # Silence, the question, then silence so server VAD ends the turn. Chromium loops the file: the long
    # tail keeps the repeated question from barging in on the reply before it has been heard.
    with wave.open(str(mic), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * (rate // 2) + pcm + b"\0\0" * (rate * 15))
    driver = chromium(
        [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}",
        ]
    )
    try:
        driver.get(gateway.url + "/")
        driver.find_element(By.ID, "tab-talk").click()
        driver.find_element(By.ID, "talk-connect").click()
        wait_for(
            lambda: int(attr(driver, "#talk-log", "data-transcripts")) >= 1, timeout=90, what="transcript"
        )
        first = driver.find_element(By.CSS_SELECTOR, "#talk-log li.user").text.lower()
        assert "sky" in first and "color" in first
        assert float(attr(driver, "#talk-level", "data-peak")) > 0.05  # the level meter saw the speech
        wait_for(
            lambda: int(attr(driver, "#talk-log", "data-audio-bytes")) > 24000, timeout=90, what="reply audio"
        )
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#talk-log li.bot"), what="reply text")
        driver.save_screenshot(str(ARTIFACTS / "talk.png"))
        driver.find_element(By.ID, "talk-hangup").click()
        assert attr(driver, "#talk-state", "data-state") == "idle"
    finally:
        driver.quit()


def test_talk_panel_explains_a_denied_microphone(browser: WebDriver, gateway: ServerProcess) -> None:
    # Headless Chromium without the fake-UI flag denies capture, as a user clicking "Block" would.
    browser.execute_cdp_cmd("Browser.resetPermissions", {})
    browser.get(gateway.url + "/")
    browser.find_element(By.ID, "tab-talk").click()
    browser.find_element(By.ID, "talk-connect").click()
    wait_for(lambda: attr(browser, "#talk-state", "data-state") == "error", timeout=30, what="error state")
    message = browser.find_element(By.ID, "talk-state").text.lower()
    assert "microphone" in message


def test_talk_panel_reconnects_when_the_socket_drops(tmp_path: Path) -> None:
    server = ServerProcess("serve")
    server.wait_ready()
    mic = tmp_path / "silence.wav"
    import wave

    with wave.open(str(mic), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(b"\0\0" * 24000)
    driver = chromium(
        [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}",
        ]
    )
    try:
        driver.get(server.url + "/")
        driver.find_element(By.ID, "tab-talk").click()
        driver.find_element(By.ID, "talk-connect").click()
        wait_for(lambda: attr(driver, "#talk-state", "data-state") == "listening", what="listening")
        server.stop()  # the gateway goes away under an open conversation
        wait_for(
            lambda: "reconnecting" in driver.find_element(By.ID, "talk-state").text.lower(),
            timeout=30,
            what="reconnect notice",
        )
    finally:
        driver.quit()
        server.stop()
