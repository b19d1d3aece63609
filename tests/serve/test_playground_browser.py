"""The playground driven in a real browser: Debian's headless Chromium through Selenium.

The fast test runs the page against the tiny random models (a server on a free loopback port in a
thread); the slow one against SmolLM2, the avatar model and the joe voice, and takes the
screenshots that docs/playground.md shows (written into docs/figures only when
``POLYSTEER_UPDATE_SCREENSHOTS=1``, else into the test's temporary folder).

Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (``apt-get install chromium
chromium-driver``); nothing is downloaded (Selenium Manager is never asked: the driver's path is
given).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("POLYSTEER_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("POLYSTEER_CHROMEDRIVER", "/usr/bin/chromedriver"))
FIGURES = Path(__file__).resolve().parents[2] / "docs" / "figures"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason=f"the browser tests need {CHROMIUM} and {CHROMEDRIVER}: "
           "apt-get install chromium chromium-driver")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


def screenshots(tmp_path: Path) -> Path:
    """docs/figures when asked to update them (POLYSTEER_UPDATE_SCREENSHOTS=1), else a temp folder."""
    if os.environ.get("POLYSTEER_UPDATE_SCREENSHOTS") == "1":
        FIGURES.mkdir(parents=True, exist_ok=True)
        return FIGURES
    return tmp_path


@pytest.fixture
def browser() -> Any:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1360,1100", "--disable-gpu", "--no-first-run"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, timeout: float = 60, message: str = "") -> Any:
    """``condition(driver)`` once true; on a timeout the page's message and statuses are shown."""
    from selenium.common.exceptions import TimeoutException

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)
    except TimeoutException:
        seen = driver.execute_script(
            "return [...document.querySelectorAll('#message, [id$=-status]')]"
            ".map(e => e.id + ': ' + e.textContent).join(' | ')")
        import inspect

        where = f"line {inspect.stack()[1].lineno}"
        raise AssertionError(f"{message or 'timed out'} at {where} (page: {seen}; console: "
                             f"{driver.get_log('browser')})") from None


def by_id(driver: Any, name: str) -> Any:
    return driver.find_element(By.ID, name)


def errors(driver: Any, allowed: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The browser console's errors (SEVERE), less network errors of URLs in ``allowed``."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
            and not (e.get("source") == "network" and any(a in e["message"] for a in allowed))]


def outputs_done(driver: Any) -> bool:
    return all(by_id(driver, f"out-{k}").get_attribute("data-state") == "done"
               for k in ("unsteered", "steered"))


def generate(driver: Any, timeout: float = 60) -> tuple[str, str]:
    """Click Generate and wait for both streams; (unsteered, steered) texts."""
    by_id(driver, "generate").click()
    wait(driver, lambda d: text_idle(d) and outputs_done(d),
         timeout, message="the two streams did not finish")
    return by_id(driver, "out-unsteered").text, by_id(driver, "out-steered").text


def slide_to_end(driver: Any, control: str) -> Any:
    """Move a slider to the top of its range with the keyboard (End), as a keyboard user would."""
    slider = driver.find_element(By.CSS_SELECTOR, f'input[data-control="{control}"]')
    slider.send_keys(Keys.END)
    return slider


def text_idle(driver: Any) -> bool:
    """No text run is scheduled or running (the page reruns both streams after a slider moved)."""
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-text-run") in (None, "idle")


def restream_after_slider(driver: Any, before: str, timeout: float = 60) -> tuple[str, str]:
    """Wait for the page's own rerun after a slider moved (the steered text changes)."""
    wait(driver, lambda d: text_idle(d) and outputs_done(d) and by_id(d, "out-steered").text != before,
         timeout, message="moving the slider changed nothing")
    return by_id(driver, "out-unsteered").text, by_id(driver, "out-steered").text


def test_the_playground_in_chromium_on_the_tiny_models(browser, playground_app, tmp_path):
    from polysteer.serve import BackgroundServer

    shots = tmp_path
    with BackgroundServer(playground_app) as server:
        d = browser
        d.get(server.url + "/")
        wait(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true",
             message="the page did not load its model, dictionaries and sliders")
        assert "tiny-llama" in by_id(d, "model-line").text

        # a prompt, both outputs the plain model
        prompt = by_id(d, "prompt")
        prompt.clear()
        prompt.send_keys("the cat sat on the mat")
        tokens = by_id(d, "max-tokens")
        tokens.clear()
        tokens.send_keys("10")
        plain, same = generate(d)
        assert plain and plain == same

        # a labelled slider moved with the keyboard: the steered side changes, the plain one not
        slider = slide_to_end(d, "style:tiny-push")
        label = d.find_element(By.CSS_SELECTOR, f'label[for="{slider.get_attribute("id")}"]')
        assert label.text == "tiny-push"
        assert slider.get_attribute("aria-valuetext") == "tiny-push 100%"
        assert "not calibrated" in d.find_element(By.CSS_SELECTOR, "#sliders .badge").text
        unsteered, steered = restream_after_slider(d, same)
        assert unsteered == plain and steered != plain
        assert "tiny-push 100%" in by_id(d, "steered-caption").text

        # features per token: hover a token, open a feature's card, add its slider
        by_id(d, "inspect").click()
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#tokens .token"))
        token = d.find_elements(By.CSS_SELECTOR, "#tokens .token")[1]
        ActionChains(d).move_to_element(token).perform()
        wait(d, lambda d: by_id(d, "token-features").is_displayed())
        by_id(d, "token-features").find_element(By.TAG_NAME, "button").click()
        wait(d, lambda d: by_id(d, "feature-card").is_displayed())
        assert "Where it fires in the prompt" in by_id(d, "feature-card").text
        by_id(d, "add-feature-slider").click()
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, 'input[data-control^="feature:"]'))
        by_id(d, "search-words").send_keys("dir3", Keys.ENTER)
        wait(d, lambda d: "dir3" in by_id(d, "search-results").text)
        shoot(d, shots / "playground-text.png")

        # save the sliders as a style (YAML shown), zero them, load the style back
        by_id(d, "style-name").send_keys("my-sliders")
        by_id(d, "save-style").click()
        wait(d, lambda d: by_id(d, "style-yaml").is_displayed())
        yaml_text = by_id(d, "style-yaml").text
        assert "playground: tiny-push=1" in yaml_text and "dir0" in yaml_text
        by_id(d, "reset-sliders").click()
        assert slide_value(d, "style:tiny-push") == 0.0
        wait(d, lambda d: "my-sliders" in by_id(d, "style-picker").text)
        Select(by_id(d, "style-picker")).select_by_value("my-sliders")
        wait(d, lambda d: slide_value(d, "style:tiny-push") == 1.0,
             message="loading the saved style did not set its slider again")
        assert "Loaded my-sliders" in by_id(d, "save-status").text
        wait(d, text_idle, message="the rerun after loading the style did not end")

        # a refused request: the server's own words in an alert
        name = by_id(d, "style-name")
        name.clear()
        name.send_keys("bad name!")
        assert not errors(d), "console errors before the refused request"
        assert not by_id(d, "message").is_displayed(), by_id(d, "message").text
        by_id(d, "save-style").click()
        wait(d, lambda d: by_id(d, "message").is_displayed())
        message = by_id(d, "message")
        assert message.get_attribute("role") == "alert"
        assert "refused" in message.text and "invalid_name" in message.text, message.text
        assert "not valid" in message.text, message.text

        # image tab (reached with the keyboard): before and after pictures
        by_id(d, "tab-text").send_keys(Keys.ARROW_RIGHT)
        wait(d, lambda d: by_id(d, "panel-image").is_displayed())
        assert by_id(d, "tab-image").get_attribute("aria-selected") == "true"
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, 'input[data-control="style:tiny-cheerful"]'),
             message="the image model's sliders did not appear")
        slide_to_end(d, "style:tiny-cheerful")
        steps = by_id(d, "image-steps")
        steps.clear()
        steps.send_keys("3")
        with media_held(playground_app):  # another drawing runs: this one is refused, and said so
            by_id(d, "draw").click()
            wait(d, lambda d: "busy" in by_id(d, "message").text)
        assert by_id(d, "message").text.startswith("The server is busy: the image and voice worker")
        by_id(d, "draw").click()
        wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#panel-image img.generated")) == 2)
        images = d.find_elements(By.CSS_SELECTOR, "#panel-image img.generated")
        assert all(i.get_attribute("src").startswith("data:image/png") for i in images)
        assert images[0].get_attribute("src") != images[1].get_attribute("src")
        shoot(d, shots / "playground-image.png")

        # voice tab: two players and two spectrograms
        by_id(d, "tab-voice").click()
        by_id(d, "speak").click()
        wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#panel-voice audio")) == 2)
        assert len(d.find_elements(By.CSS_SELECTOR, "#panel-voice canvas.spectrogram")) == 2
        audio = d.find_elements(By.CSS_SELECTOR, "#panel-voice audio")
        assert all(a.get_attribute("src").startswith("data:audio/wav") for a in audio)
        wait(d, lambda d: d.execute_script(
            "return [...document.querySelectorAll('#panel-voice audio')].every(a => a.readyState >= 1)"),
            message="the browser could not read the WAVs")

        # cross-modal tab: story, portrait and narration
        by_id(d, "tab-create").click()
        by_id(d, "create").click()
        wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#creation audio")) == 2, 120)
        assert len(d.find_elements(By.CSS_SELECTOR, "#creation img.generated")) == 2
        assert "Story" in by_id(d, "creation").text

        assert not errors(d, allowed=("/v1/styles/bad", "/v1/playground/draw - Failed to load "
                                               "resource: the server responded with a status of 429")
                          ), "console errors"


@contextlib.contextmanager
def media_held(app: Any) -> Iterator[None]:
    """The playground's image and voice worker busy (as with another user's drawing) meanwhile."""
    media = app.state.playground
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(60)

    holder = threading.Thread(target=lambda: asyncio.run(media.run(hold, exclusive=True)))
    holder.start()
    try:
        assert started.wait(60)
        yield
    finally:
        release.set()
        holder.join(60)


def shoot(driver: Any, path: Path) -> None:
    """A screenshot of the page from its top (the view a user has after loading it)."""
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))


def slide_value(driver: Any, control: str) -> float:
    return float(driver.find_element(By.CSS_SELECTOR, f'input[data-control="{control}"]')
                 .get_attribute("value"))


@pytest.mark.slow
def test_the_playground_on_the_embedded_models(browser, tmp_path, monkeypatch):
    """SmolLM2, avatars and joe: a slider changes the story, the picture and the voice."""
    import polysteer as ps
    from polysteer.serve import BackgroundServer, PlaygroundConfig, ServeLimits, create_app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    llm = ps.load_model("smollm2")
    app = create_app(llm, name="smollm2", styles_dir=tmp_path / "styles",
                     limits=ServeLimits(max_tokens=64, default_tokens=16),
                     playground=PlaygroundConfig())
    shots = screenshots(tmp_path)
    try:
        with BackgroundServer(app) as server:
            d = browser
            d.get(server.url + "/")
            wait(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true",
                 120)
            prompt = by_id(d, "prompt")
            prompt.clear()
            prompt.send_keys("Describe a rainy Monday.")
            plain, _ = generate(d, 240)
            slide_to_end(d, "style:cheerful")
            unsteered, steered = restream_after_slider(d, plain, 240)
            assert unsteered == plain and steered != plain
            by_id(d, "inspect").click()
            wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#tokens .token"), 120)
            token = d.find_elements(By.CSS_SELECTOR, "#tokens .token")[3]
            ActionChains(d).move_to_element(token).perform()
            wait(d, lambda d: by_id(d, "token-features").is_displayed())
            shoot(d, shots / "playground-text.png")

            by_id(d, "tab-image").click()
            wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, 'input[data-control="style:cheerful"]'),
                 120)
            steps = by_id(d, "image-steps")
            steps.clear()
            steps.send_keys("12")
            by_id(d, "draw").click()
            wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#panel-image img.generated")) == 2,
                 240)
            shoot(d, shots / "playground-image.png")

            by_id(d, "tab-voice").click()
            speech = by_id(d, "speech")
            speech.clear()
            speech.send_keys("What a lovely morning for a walk.")
            by_id(d, "speak").click()
            wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#panel-voice audio")) == 2, 240)
            shoot(d, shots / "playground-voice.png")
            assert not errors(d), "console errors"
    finally:
        app.state.engine.close(cancel=True)
    print(f"slow playground test: {time.perf_counter() - start:.1f} s")
