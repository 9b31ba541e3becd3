"""The browser page in a real browser: Debian's Chromium driven by Playwright, against the real API
and a real worker (`gcn serve`, the embedded mode) on a tiny preset.

Screenshots of every step go to ``test-output/browser/`` (or ``$GCN_TEST_OUTPUT/browser``).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

CHROMIUM = os.environ.get("GCN_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("GCN_TEST_OUTPUT", ROOT / "test-output")) / "browser"

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; scripts/test.sh does it as root)",
                allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`gcn serve` on a free port with its own data folder, stopped at the end."""
    data = tmp_path_factory.mktemp("gcn-data")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCN_")}
    env.update(GCN_DATA_DIR=str(data), GCN_TORCH_THREADS="1", PYTHONPATH=str(ROOT))
    log = open(data / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"gcn serve exited: {(data / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
        else:
            pytest.fail("gcn serve did not become ready in 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots():
    shutil.rmtree(OUTPUT, ignore_errors=True)
    OUTPUT.mkdir(parents=True)
    return OUTPUT


def test_upload_learn_watch_sample_download(server, browser, shots, brick64, tmp_path):
    brick = tmp_path / "brick.png"
    brick64.save(brick)
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(server)
    page.wait_for_selector("#preset option[value=texture-fast]", state="attached")
    page.screenshot(path=shots / "01-empty.png", full_page=True)

    page.set_input_files("#files", str(brick))
    page.wait_for_selector("#thumbs img")
    page.fill("#iterations", "60")
    page.fill("#image-size", "32")
    page.screenshot(path=shots / "02-chosen.png", full_page=True)
    page.click("#start")

    # progress advances and a preview appears, live (no reload)
    page.wait_for_selector("#watch:not([hidden])")
    page.wait_for_function("document.querySelector('#watch-progress').value > 0", timeout=120_000)
    page.wait_for_selector("#preview:not([hidden])", timeout=120_000)
    page.screenshot(path=shots / "03-learning.png", full_page=True)
    assert page.evaluate("document.querySelector('#preview').naturalWidth") > 0

    # learning ends, the model opens
    page.wait_for_selector("#model:not([hidden])", timeout=180_000)
    assert page.text_content("#watch-status") == "succeeded"
    assert page.evaluate("document.querySelectorAll('#gap-plot path').length") == 1
    page.screenshot(path=shots / "04-model.png", full_page=True)

    # sample three 48 px images and see them in the gallery
    page.fill("#n", "3")
    page.fill("#size", "48")
    page.fill("#seed", "7")
    page.click("#sample-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#gallery figure').length === 4", timeout=120_000)
    page.screenshot(path=shots / "05-gallery.png", full_page=True)

    # download one PNG and check it decodes at the asked size
    with page.expect_download() as info:
        page.click("#gallery figure:first-child a")
    data = Path(info.value.path()).read_bytes()
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.size == (48, 48)

    # download the weights (a safetensors file)
    with page.expect_download() as info:
        page.click("#weights")
    assert Path(info.value.path()).read_bytes()[8:9] == b"{"  # safetensors: u64 header length, then JSON

    # the auto-encoder view: input and reconstruction side by side
    page.set_input_files("#recon-file", str(brick))
    page.click("#recon-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#recon figure img').length === 2", timeout=60_000)
    page.screenshot(path=shots / "06-reconstruction.png", full_page=True)

    # inpainting: half of the pixels dropped at random, recovered, errors beside the baselines
    page.set_input_files("#inpaint-file", str(brick))
    page.fill("#drop-fraction", "0.5")
    page.fill("#inpaint-steps", "10")
    page.click("#inpaint-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#inpaint figure img').length === 3", timeout=60_000)
    page.wait_for_selector("#inpaint-errors:not([hidden])")
    assert page.locator("#inpaint-errors tbody tr").count() == 3
    status = page.text_content("#inpaint-status")
    assert status.startswith("done") and 40 <= int(status.split(":")[1].split("%")[0]) <= 60, status
    page.screenshot(path=shots / "06b-inpaint-random.png", full_page=True)

    # a painted mask: a stroke with the mouse, then the centre square from the keyboard-friendly button
    page.check("input[name=mask-mode][value=draw]")
    page.wait_for_selector("#mask-editor:not([hidden])")
    box = page.locator("#mask-canvas").bounding_box()
    page.mouse.move(box["x"] + 10, box["y"] + 10)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 10, box["y"] + 20, steps=10)
    page.mouse.up()
    painted = page.evaluate("""() => { const c = document.querySelector('#mask-canvas');
        const p = c.getContext('2d').getImageData(c.width / 2, 12, 1, 1).data; return [p[0], p[1], p[2]]; }""")
    assert painted[0] > painted[1] + 40, painted  # the stroke shows red over the grey brick
    page.click("#mask-centre")
    page.evaluate("document.querySelector('#inpaint-status').textContent = ''")
    page.click("#inpaint-form button[type=submit]")
    page.wait_for_function("document.querySelector('#inpaint-status').textContent.startsWith('done')",
                           timeout=60_000)
    status = page.text_content("#inpaint-status")
    assert 25 <= int(status.split(":")[1].split("%")[0]) <= 50, status  # the centre quarter plus the stroke
    page.screenshot(path=shots / "06c-inpaint-mask.png", full_page=True)

    # lists show the model and the jobs with their states
    page.click("#refresh")
    page.wait_for_selector("#jobs .status.succeeded")
    assert page.locator("#models li button").count() >= 1
    page.screenshot(path=shots / "07-lists.png", full_page=True)
    context.close()


def test_api_errors_are_shown_in_words(server, browser, shots, tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is text, not a PNG")
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone-sized window
    page.goto(server)
    page.wait_for_selector("#preset option[value=texture-fast]", state="attached")
    page.set_input_files("#files", str(bad))
    page.click("#start")
    page.wait_for_selector("#error:not([hidden])")
    message = page.text_content("#error")
    assert "HTTP 415" in message or "HTTP 422" in message
    assert "image" in message.lower()
    page.screenshot(path=shots / "08-error-phone.png", full_page=True)
    page.close()


def test_every_control_has_a_label_and_takes_the_keyboard(server, browser):
    page = browser.new_page()
    page.goto(server)
    page.wait_for_selector("#preset option[value=texture-fast]", state="attached")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select')].filter((el) => {
               if (el.type === 'hidden') return false;
               const byFor = el.id && document.querySelector(`label[for="${el.id}"]`);
               return !(byFor || el.closest('label') || el.getAttribute('aria-label'));
           }).map((el) => el.id || el.name)"""
    )
    assert unlabelled == []
    # the drop zone takes focus and Enter opens the (multiple) file picker
    page.evaluate("document.querySelector('#files').addEventListener('click', () => { window.pickerOpened = true; })")
    page.focus("#drop")
    page.keyboard.press("Enter")
    assert page.evaluate("window.pickerOpened === true")
    assert page.evaluate("document.querySelector('#files').multiple")
    # every button and the drop zone are reachable with Tab
    reached = set()
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert {"drop", "files", "preset", "iterations", "image-size", "start", "refresh"} <= reached, reached
    page.close()


def test_a_model_of_several_categories_learns_and_samples_the_chosen_one(server, browser, shots, tmp_path):
    """Learning from two named sets of images on the page makes one model of two categories; the
    Sample form then offers a labelled category select, reachable with the keyboard, and the
    captions name the category sampled; the reconstruction is that category's too."""
    from stripes import HORIZONTAL, VERTICAL  # tests/stripes.py

    paths = {}
    for name, images in (("horizontal", HORIZONTAL), ("vertical", VERTICAL)):
        paths[name] = []
        for k, im in enumerate(images):
            path = tmp_path / f"{name}-{k}.png"
            im.save(path)
            paths[name].append(str(path))
    http = httpx.Client(base_url=server, timeout=30)

    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(20_000)
    page.goto(server)
    page.wait_for_selector("#preset option[value=texture-fast]", state="attached")
    page.click("#categories-box summary")
    page.fill("#cat-name-1", "horizontal")
    page.set_input_files("#cat-files-1", paths["horizontal"])
    page.click("#start")  # the second category has no name nor images yet: refused in words
    page.wait_for_selector("#error:not([hidden])")
    assert "at least two categories" in page.text_content("#error")
    page.fill("#cat-name-2", "vertical")
    page.set_input_files("#cat-files-2", paths["vertical"])
    page.fill("#iterations", "20")
    page.fill("#image-size", "32")
    page.screenshot(path=shots / "09a-categories-chosen.png", full_page=True)
    page.click("#start")
    page.wait_for_selector("#model:not([hidden])", timeout=180_000)
    assert page.text_content("#watch-status") == "succeeded"
    model = http.get(f"/v1/models/{page.text_content('#model-id')}").json()
    assert [c["name"] for c in model["categories"]] == ["horizontal", "vertical"]
    assert len({c["dataset_id"] for c in model["categories"]}) == 2  # one dataset per category

    page.wait_for_selector("#category-field:not([hidden])")
    assert page.text_content("label[for=category]") == "Category"
    assert page.eval_on_selector_all("#category option", "os => os.map((o) => o.value)") == ["horizontal", "vertical"]
    assert "2 categories: horizontal, vertical" in page.text_content("#model-summary")
    # from the keyboard: focus the select, pick the second category, then the form's submit button
    page.focus("#category")
    page.keyboard.press("ArrowDown")
    assert page.input_value("#category") == "vertical"
    page.fill("#n", "2")
    page.fill("#steps", "5")
    page.click("#sample-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#gallery figure').length === 3", timeout=60_000)
    captions = page.eval_on_selector_all("#gallery figcaption", "fs => fs.map((f) => f.textContent)")
    assert captions == ["Download vertical sample 1", "Download vertical sample 2", "Download vertical grid"]
    assert "of category vertical" in page.text_content("#sample-status")
    page.screenshot(path=shots / "09-categories.png", full_page=True)
    # the reconstruction is the chosen category's too
    page.set_input_files("#recon-file", paths["horizontal"][0])
    page.click("#recon-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#recon figure img').length === 2", timeout=60_000)
    captions = page.eval_on_selector_all("#recon figcaption", "fs => fs.map((f) => f.textContent)")
    assert captions == ["Download input", "Download reconstruction by the vertical model"]

    # a model of one category shows no select
    page.evaluate("document.querySelector('#category-field').hidden = false")
    single = http.get("/v1/models").json()["items"]
    one = [m for m in single if len(m["categories"]) == 1]
    if one:
        page.evaluate(f"openModel({one[0]['id']!r})")
        page.wait_for_selector("#category-field[hidden]", state="attached")
    page.close()
