"""``arvis demo`` end to end in a real headless browser: Debian's chromium and chromium-driver (installed by
.ci/run), driven by Selenium with the driver's path given, so nothing is downloaded. The demo runs as its own
process on a free loopback port; the test picks a class (or writes a prompt), generates, and checks the images."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from arvis.data.captions import caption_vocabulary  # noqa: E402
from arvis.generators.base import GENERATORS  # noqa: E402
from arvis.pipeline import Pipeline  # noqa: E402
from arvis.testing import randomize_parameters_  # noqa: E402
from arvis.text import TextTokenizer  # noqa: E402
from arvis.tokenizers.base import TOKENIZERS  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = os.environ.get("ARVIS_DEMO_SCREENSHOT")  # where to save the page after generating (docs/)

if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    reason = (f"no Chromium here ({CHROMIUM}, {CHROMEDRIVER} missing): install Debian's chromium and "
              "chromium-driver (.ci/run does) to run the browser tests")
    print(f"SKIP test_demo_browser: {reason}", file=sys.stderr)
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def serve(tmp_path):
    """Starts ``arvis demo`` on a pipeline folder; yields its URL; stops it."""
    processes = []

    def start(folder: Path) -> str:
        port = free_port()
        log = open(tmp_path / f"demo-{port}.log", "w")
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        process = subprocess.Popen([sys.executable, "-m", "arvis.cli", "demo", str(folder), "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        processes.append(process)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 180
        while time.time() < deadline:
            if process.poll() is not None:
                pytest.fail(f"arvis demo exited with {process.returncode}: "
                            f"{(tmp_path / f'demo-{port}.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return url
            except OSError:
                time.sleep(0.5)
        pytest.fail("arvis demo did not answer within 180 s")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def generated_images(driver, count: int) -> list:
    """Clicks Generate and waits for ``count`` loaded images in the samples gallery."""
    driver.execute_script("arguments[0].click()", driver.find_element(By.ID, "generate"))

    def loaded(driver):
        images = driver.find_elements(By.CSS_SELECTOR, "#samples img")
        done = len(images) == count and all(driver.execute_script("return arguments[0].complete && "
                                                                  "arguments[0].naturalWidth > 0", image)
                                            for image in images)
        return images if done else False

    return WebDriverWait(driver, 120).until(loaded)


def test_pick_a_class_and_generate(serve, browser, tiny_pipeline, tmp_path):
    folder = tiny_pipeline.with_metadata(class_names=[f"glyph {i}" for i in range(10)]) \
        .save_pretrained(tmp_path / "tiny")
    browser.get(serve(folder))
    picker = WebDriverWait(browser, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "#classes input"))
    picker.click()
    picker.send_keys("glyph 3")
    picker.send_keys(Keys.ENTER)
    picker.send_keys(Keys.ESCAPE)
    assert "3: glyph 3" in browser.find_element(By.ID, "classes").text
    images = generated_images(browser, 2 * 4)  # classes 0 and 3, four samples each
    size = tiny_pipeline.tokenizer.image_size[0]
    assert {(int(image.get_attribute("naturalWidth")), int(image.get_attribute("naturalHeight")))
            for image in images} == {(size, size)}
    grid = browser.find_element(By.CSS_SELECTOR, "#grid img")
    assert int(grid.get_attribute("naturalWidth")) > 4 * size
    if SCREENSHOT:
        browser.save_screenshot(SCREENSHOT)


def test_write_a_prompt_and_generate(serve, browser, tmp_path):
    torch.manual_seed(0)
    words = TextTokenizer.word_level(caption_vocabulary())
    preset = GENERATORS.preset("raster-t2i-tiny").replace(text_vocab_size=words.vocab_size, prompt_length=12)
    pipeline = Pipeline(TOKENIZERS.build("vq-tiny"),
                        randomize_parameters_(GENERATORS.class_for_config(preset)(preset)), text_tokenizer=words)
    browser.get(serve(pipeline.save_pretrained(tmp_path / "text")))
    box = WebDriverWait(browser, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "#prompts textarea"))
    box.send_keys("a small red ring at the top left")
    images = generated_images(browser, 4)
    assert {int(image.get_attribute("naturalWidth")) for image in images} == {pipeline.tokenizer.image_size[0]}
    box.clear()
    box.send_keys("a purple ring")  # a word outside the vocabulary: the page shows the error
    browser.execute_script("arguments[0].click()", browser.find_element(By.ID, "generate"))
    WebDriverWait(browser, 60).until(lambda d: "outside the text vocabulary" in d.page_source)
