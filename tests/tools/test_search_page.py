"""search_page.py in a real browser: the page started on a free local port with a tiny
random-init model over a small synthetic split (one image broken), driven by Debian's headless
Chromium; and the page's gallery, search and messages without a browser."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_config, user_error, with_project_on_path
from PIL import Image

import search_page
from dataset_tools.synthetic import generate
from datasets.build import read_dataset
from model.build import build_model
from serving.figures import CORRECT, WRONG
from serving.gallery import encode_folder, rank_gallery
from serving.inference import load_model
from serving.page_search import PageMessage, efa_map, folder_gallery, search, split_gallery

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# The flags this machine's headless Chromium runs with: nothing fetched, nothing kept.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]
TOP_K = 5
# The tiny model's settings beside its weights file (conftest.tiny_config).
TINY = ["model.image_size=[64,32]", "model.pretrain=none", "train.device=cpu", "train.precision=fp32"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(weights file, data root, test image folder, the broken image's name) of a random-init
    tiny CLIP and a small synthetic dataset whose test split has one undecodable image."""
    base = tmp_path_factory.mktemp("page")
    torch.manual_seed(0)
    weights = base / "tiny.pth"
    torch.save({"model": build_model(tiny_config(), num_classes=4).state_dict()}, weights)
    generate(base / "data", num_train_ids=2, num_val_ids=0, num_test_ids=5, image_size=(96, 32), seed=3)
    images = base / "data" / "Synthetic-PEDES" / "imgs" / "test"
    broken = sorted(images.glob("*.jpg"))[-1]
    broken.write_bytes(b"not a jpeg")
    return weights, base / "data", images, broken.name


def web_python() -> str:
    """A Python with the page's packages: this one, FMFA_WEB_PYTHON or the clone's .venv-web
    (.ci/run makes it: gradio wants another pillow than requirements.txt's)."""
    for python in (sys.executable, os.environ.get("FMFA_WEB_PYTHON"), str(ROOT / ".venv-web" / "bin" / "python")):
        if python and Path(python).exists():
            probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('gradio') is None)"
            if subprocess.run([python, "-c", probe], capture_output=True).returncode == 0:
                return python
    unavailable("no Python with gradio (README 'Search page': pip install -r requirements-web.txt into .venv-web)")


def unavailable(reason: str) -> None:
    """Skip for want of the browser test's tools, except in CI, where that is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def page_url(tiny, tmp_path_factory):
    """The page's address, served by search_page.py in its own process until the module ends."""
    weights, root, _, _ = tiny
    python, port = web_python(), free_port()
    log = tmp_path_factory.mktemp("page_log") / "page.log"
    command = [python, "search_page.py", "--checkpoint", str(weights), "--split", "test", "--dataset"]
    command += ["Synthetic-PEDES", "--root", str(root), "--port", str(port), "--top-k", str(TOP_K), *TINY]
    env = with_project_on_path({**os.environ, "GRADIO_TEMP_DIR": str(log.parent / "gradio")})
    with open(log, "w") as output:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for_page(server, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for_page(server: subprocess.Popen, port: int, log: Path, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the page stopped (status {server.returncode}):\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the page did not answer on port {port} in {limit} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's headless Chromium under chromedriver (never a downloaded browser), with a new
    empty profile."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install -r requirements.txt)")
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        unavailable(f"{', '.join(missing)} missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}"]:
        options.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"  # selenium's manager must not look for browsers or drivers online
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait(driver, condition, what: str, limit: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, limit, poll_frequency=0.2).until(lambda d: condition(d), message=what)


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def shown_results(driver):
    """(caption, image address) of each result the page shows, in order."""
    from selenium.webdriver.common.by import By

    items = driver.find_elements(By.CSS_SELECTOR, "#results .thumbnail-item")
    return [(item.text.strip(), item.find_element(By.TAG_NAME, "img").get_attribute("src")) for item in items]


def type_and_search(driver, query: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, "#query textarea")
    box.clear()
    box.send_keys(query)
    driver.find_element(By.ID, "search").click()


def border_colour(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=10) as answer:
        picture = Image.open(io.BytesIO(answer.read())).convert("RGB")
    return np.asarray(picture)[2, 2].astype(int)


def hex_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])


@pytest.mark.slow(seconds=40)
def test_the_page_shows_search_py_top_k_framed_with_maps_and_messages(tiny, page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    weights, root, images, broken = tiny
    browser.get(page_url)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#query textarea"), "the query box")
    about = text_of(browser, "about")
    assert f"1 unreadable image skipped: {broken}" in about, about
    # A bad input: an empty query answers with its message, and no results.
    type_and_search(browser, "")
    wait(browser, lambda d: "Type a description" in text_of(d, "status"), "the empty query's message")
    assert shown_results(browser) == []
    # A split caption: search.py's top K for it, in its order, framed by identity.
    split = read_dataset(str(root), "Synthetic-PEDES").eval_set("test")
    query, query_pid = split.captions[0], split.caption_pids[0]
    type_and_search(browser, query)
    wait(browser, lambda d: len(shown_results(d)) == TOP_K, f"{TOP_K} results")
    loaded = load_model(weights, overrides=TINY)
    assert encode_folder(images, loaded).encoded == 0, "the page's embeddings are search.py's cache"
    expected = rank_gallery(loaded, encode_folder(images, loaded, use_cache=False), query, TOP_K)
    pid_of = dict(zip((p.name for p in split.image_paths), split.image_pids))
    shown = shown_results(browser)
    for rank, ((caption, address), (path, score)) in enumerate(zip(shown, expected), 1):
        assert caption.startswith(f"#{rank} ") and caption.endswith(f"· {path.name}"), (caption, path.name)
        assert abs(float(caption.split()[1]) - score) <= 1e-3, (caption, score)
        right = pid_of[path.name] == query_pid
        assert (" ✓ " in caption) == right and (" ✗ " in caption) == (not right), caption
        assert np.abs(border_colour(address) - hex_rgb(CORRECT if right else WRONG)).max() < 12, caption
    assert "green frames are that person" in text_of(browser, "status")
    # Choosing a result shows the EFA map of the query's words on that image.
    browser.find_elements(By.CSS_SELECTOR, "#results .thumbnail-item")[1].click()
    loaded_map = (
        "const map = document.querySelector('#efa-map img'); return !!map && map.complete && map.naturalWidth > 0"
    )
    wait(browser, lambda d: d.execute_script(loaded_map), "the EFA map")
    assert text_of(browser, "map-note").startswith(f"Result #2 ({expected[1][0].name}, score"), text_of(
        browser, "map-note"
    )
    screenshot = tmp_path / "page.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    if os.environ.get("FMFA_PAGE_SCREENSHOT"):  # docs/search-page.png: docs/tools.md says how it is made
        with Image.open(screenshot) as picture:  # 128 colours: a third of the bytes, for the repository
            picture.convert("RGB").quantize(colors=128).save(os.environ["FMFA_PAGE_SCREENSHOT"], optimize=True)
    # A word that is not in the query is named in the page.
    browser.find_element(By.CSS_SELECTOR, "#words textarea").send_keys("umbrella")
    browser.find_elements(By.CSS_SELECTOR, "#results .thumbnail-item")[0].click()
    wait(browser, lambda d: "'umbrella' is not in the caption" in text_of(d, "map-note"), "the unknown word's message")
    assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text


def test_page_gallery_counts_skips_and_shares_search_py_cache(tiny, tmp_path):
    """A split and a folder over the same images share one cache (encoded once); the unreadable
    image is skipped, counted and named; a split knows each image's identity."""
    weights, root, _, broken = tiny
    root = Path(shutil.copytree(root, tmp_path / "data", ignore=shutil.ignore_patterns(".fmfa_cache")))
    images = root / "Synthetic-PEDES" / "imgs" / "test"
    loaded = load_model(weights, overrides=TINY)
    split = split_gallery(root, "Synthetic-PEDES", "test", loaded)
    readable = len(list(images.glob("*.jpg"))) - 1
    assert split.gallery.encoded == len(split.gallery.paths) == readable
    assert f"1 unreadable image skipped: {broken}" in split.describe()
    assert split_gallery(root, "Synthetic-PEDES", "test", loaded).gallery.encoded == 0
    folder = folder_gallery(images, loaded)
    assert folder.gallery.encoded == 0 and folder.gallery.paths == split.gallery.paths
    assert torch.equal(folder.gallery.features, split.gallery.features)
    records = {r.image_path: r.pid for r in read_dataset(str(root), "Synthetic-PEDES").split_records("test")}
    assert split.image_pids == {path: records[path] for path in split.image_pids}
    assert folder.image_pids == {} and folder.caption_pids == {}
    (images / "new.jpg").write_bytes((images / split.gallery.paths[0].name).read_bytes())
    assert folder_gallery(images, loaded).gallery.encoded == 1  # only the new image


def test_page_answers_bad_input_with_a_message(tiny):
    weights, root, images, _ = tiny
    loaded = load_model(weights, overrides=TINY)
    page = folder_gallery(images, loaded, use_cache=False)
    for query, count, message in (("  ", 5, "Type a description"), ("a man", 0, "between 1 and 50")):
        with pytest.raises(PageMessage, match=message):
            search(loaded, page, query, count)
    results = search(loaded, page, "a man in a black jacket", 3)
    assert [caption.split(" · ")[1] for _, caption in results.items] == [p.name for p, _ in results.hits]
    assert "no frames" in results.summary  # a folder has no identities
    with pytest.raises(PageMessage, match="Search first"):
        efa_map(loaded, None, None, "")
    with pytest.raises(PageMessage, match="no word of more than three letters"):
        efa_map(loaded, search(loaded, page, "a b c", 3), 0, "")
    picture, note = efa_map(loaded, results, 2, "")
    assert picture.height > picture.width and note.startswith(f"Result #3 ({results.hits[2][0].name}")
    assert "the words black, jacket look" in note  # "a man in a black jacket": words of 4+ letters


def test_page_start_errors_are_one_line(tiny, tmp_path, capsys):
    """A missing model and an empty gallery are named together before anything loads."""
    empty = tmp_path / "empty"
    empty.mkdir()
    message = user_error(capsys, search_page.main, ["--checkpoint", str(tmp_path / "nope.pth"), "--images", str(empty)])
    assert "checkpoint not found" in message and f"no images in {empty}" in message
    message = user_error(
        capsys, search_page.main, ["--checkpoint", str(tiny[0]), "--split", "test", "--root", str(tmp_path)]
    )
    assert "annotation" in message.lower() or "not found" in message


@pytest.mark.slow(seconds=25)
def test_the_page_benchmark_runs(tmp_path):
    """benchmarks/search_page.py on 20 images, 1,000 generated embeddings: it prints its rows
    (figures printed, not asserted)."""
    command = [web_python(), "-m", "benchmarks.search_page", "--images", "20", "--large", "1000", "--queries", "2"]
    result = subprocess.run(command, cwd=ROOT, env=with_project_on_path(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for row in ("cache cold", "cache warm", "20 images, page handler", "1,000 generated embeddings, D=128"):
        assert row in result.stdout, result.stdout
