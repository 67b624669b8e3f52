"""The notebooks in a real browser: JupyterLab on localhost with a token, Debian's chromium driven
by Playwright (the system browser, never a downloaded one). For 01_view_geometry: runs all cells,
checks that the slider widgets render and that moving one (typed into its readout, and dragged with
the mouse) redraws the figure, and that a typo typed into the parameters cell stops the notebook
with a one-line "did you mean" error. For 03_dense_features (on few view pairs): every figure cell
renders its images, no cell shows an error and the browser logs no console error. Screenshots go
under runs/test-artifacts/."""

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import require_data

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "runs" / "test-artifacts"


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser_path():
    found = chromium()
    require_data(found is not None,
                 "no chromium; install Debian's with 'sudo apt-get install chromium' (make test does it where it can)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (a dev dependency of simlab)")
    return found


@pytest.fixture
def lab(tmp_path, browser_path):
    """A JupyterLab server on a copy of the notebook; yields (url, token)."""
    shutil.copy(ROOT / "notebooks" / "01_view_geometry.ipynb", tmp_path / "01_view_geometry.ipynb")
    shutil.copy(ROOT / "notebooks" / "01_view_geometry.ipynb", tmp_path / "typo.ipynb")  # edited by a test
    port, token = free_port(), "simlab-test-token"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(tmp_path / ".rt"),
           "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
                             "--LabApp.news_url=", "--LabApp.expose_app_in_browser=True", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                             *(["--allow-root"] if os.geteuid() == 0 else [])],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def open_notebook(page, url: str, token: str, name: str) -> None:
    """Open a notebook in JupyterLab and wait until its kernel is idle (cells sent before are lost)."""
    page.goto(f"{url}/lab/tree/{name}?token={token}", timeout=120_000)
    page.wait_for_selector(".jp-Notebook", timeout=120_000)
    page.wait_for_function("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                           " const s = w && w.sessionContext && w.sessionContext.session;"
                           " return s && s.kernel && s.kernel.status === 'idle'; }", timeout=120_000)


def tuple_text(page) -> str:
    """The explorer's text: the relative tuple, the corner patches and any notes."""
    return page.locator(".widget-html", has_text="Δi=").first.inner_text()


@contextlib.contextmanager
def browser_page(browser_path: str, failure_png: str, height: int = 1800):
    """A page of headless chromium (Debian's, through Playwright); a failure inside the block saves a
    full-page screenshot as ARTIFACTS/failure_png first (an old one is removed); the browser closes."""
    from playwright import sync_api
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / failure_png).unlink(missing_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            try:
                yield page
            except Exception:
                page.screenshot(path=str(ARTIFACTS / failure_png), full_page=True)
                raise
        finally:
            browser.close()


def test_a_typo_typed_into_the_parameters_cell_fails_with_did_you_mean(lab, browser_path):
    """In JupyterLab papermill injects nothing: the validation cell reads the parameters cell as run."""
    url, token = lab
    with browser_page(browser_path, "view_geometry_typo_failure.png", height=1400) as page:
        open_notebook(page, url, token, "typo.ipynb")
        # select the whole "mask_ratio = ..." line of the parameters cell and type it with a typo
        line = page.locator(".jp-Cell .cm-line", has_text="mask_ratio = 0.6").first
        line.click()
        page.keyboard.press("Home")
        page.keyboard.press("Shift+End")
        page.keyboard.type("mask_ratoi = 0.6  # share of view-1 patches masked")
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        error = page.locator(".jp-OutputArea-output", has_text="unknown parameter")
        error.wait_for(timeout=120_000)
        text = error.inner_text()
        page.screenshot(path=str(ARTIFACTS / "view_geometry_typo.png"), full_page=True)
    assert "unknown parameter 'mask_ratoi' (did you mean 'mask_ratio'?)" in text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1  # the reason, not simlab's stack


def test_view_geometry_notebook_in_chromium(lab, browser_path):
    url, token = lab
    with browser_page(browser_path, "view_geometry_failure.png") as page:
        # Run > Run All Cells through JupyterLab's own command (the app is exposed for this test),
        # once the kernel is up: cells sent before that are lost
        open_notebook(page, url, token, "01_view_geometry.ipynb")
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        sliders = page.locator(".widget-slider")
        sliders.first.wait_for(timeout=180_000)
        image = page.locator(".widget-image").first
        image.wait_for(timeout=60_000)
        assert sliders.count() >= 9  # scale, ratio, y, x per view and the mask ratio
        page.wait_for_function("() => { const i = document.querySelector('.widget-image');"
                               " return i && i.src && i.naturalWidth > 0; }", timeout=60_000)
        before = image.get_attribute("src")
        text_before = tuple_text(page)
        page.screenshot(path=str(ARTIFACTS / "view_geometry_before.png"), full_page=True)
        # move "v2 x" by typing into its readout, as a user can
        readout = page.locator(".widget-slider", has_text="v2 x").locator(".widget-readout")
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("0.05")
        page.keyboard.press("Enter")
        page.wait_for_function("before => document.querySelector('.widget-image').src !== before", arg=before,
                               timeout=60_000)
        assert tuple_text(page) != text_before
        page.screenshot(path=str(ARTIFACTS / "view_geometry_browser.png"), full_page=True)
        # drag "v1 y" with the mouse, as a user does: the figure and the printed tuple follow
        before, text_before = image.get_attribute("src"), tuple_text(page)
        handle = page.locator(".widget-slider", has_text="v1 y").locator(".noUi-handle")
        box = handle.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2 + 80, box["y"] + box["height"] / 2, steps=8)
        page.mouse.up()
        page.wait_for_function("before => document.querySelector('.widget-image').src !== before", arg=before,
                               timeout=60_000)
        assert tuple_text(page) != text_before
        assert "sliders redraw" in page.locator(".widget-html", has_text="sliders redraw").inner_text()
        page.screenshot(path=str(ARTIFACTS / "view_geometry_dragged.png"), full_page=True)
    assert (ARTIFACTS / "view_geometry_browser.png").stat().st_size > 20_000


# Figures 03_dense_features draws, by the dense_viz function that draws them: one per call, except
# the per-image predictions, drawn for every index of the parameters cell.
DENSE_FIGURES = ("plot_dense_evidence", "plot_dense_features", "plot_attention", "plot_correspondences")


def small_dense_notebook(folder: Path, pairs: int = 32) -> dict:
    """A copy of 03_dense_features in ``folder`` with ``pairs`` edited in its parameters cell (as a user
    would, to look quickly); returns the parameters cell's values."""
    from simlab.notebooks import defaults
    nb = json.loads((ROOT / "notebooks" / "03_dense_features.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    source = "".join(cell["source"])
    edited = re.sub(r"^pairs = \d+", f"pairs = {pairs}", source, flags=re.M)
    assert edited != source, "the parameters cell no longer sets pairs"
    cell["source"] = edited.splitlines(keepends=True)
    (folder / "03_dense_features.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    return {**defaults("03_dense_features"), "pairs": pairs}


# What every code cell shows, read from JupyterLab's own models and the page: its source, execution
# count, error outputs (type 'error' in the model), and the images rendered in its output area
# (decoded: an <img> that failed to load has no natural width).
CELL_REPORT = """() => window.jupyterapp.shell.currentWidget.content.widgets
    .filter(c => c.model.type === 'code')
    .map(c => {
        const outputs = [];
        for (let k = 0; k < c.model.outputs.length; k++) outputs.push(c.model.outputs.get(k).toJSON());
        const images = Array.from(c.node.querySelectorAll('.jp-OutputArea-output img'));
        return {source: c.model.sharedModel.getSource(), count: c.model.executionCount,
                errors: outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
                images: images.length, decoded: images.filter(i => i.complete && i.naturalWidth > 0).length};
    })"""

# Run All has finished: the kernel is idle and every code cell has run, or one failed (the kernel
# then skips the cells queued after it, which keep no execution count).
RUN_ALL_DONE = """() => { const w = window.jupyterapp.shell.currentWidget;
    const s = w && w.sessionContext && w.sessionContext.session;
    if (!s || !s.kernel || s.kernel.status !== 'idle') return false;
    const cells = w.content.widgets.filter(c => c.model.type === 'code');
    const failed = cells.some(c => { for (let k = 0; k < c.model.outputs.length; k++)
        if (c.model.outputs.get(k).type === 'error') return true; return false; });
    return failed || cells.every(c => c.model.executionCount !== null); }"""


def test_dense_features_notebook_renders_every_figure_without_a_console_error(lab, browser_path, tmp_path):
    url, token = lab
    params = small_dense_notebook(tmp_path)
    console = []
    with browser_page(browser_path, "dense_features_failure.png") as page:
        page.on("console", lambda m: m.type == "error" and console.append(f"console: {m.text} at {m.location}"))
        page.on("pageerror", lambda e: console.append(f"page error: {e}"))
        open_notebook(page, url, token, "03_dense_features.ipynb")
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_function(RUN_ALL_DONE, timeout=240_000, polling=500)
        cells = page.evaluate(CELL_REPORT)
        page.screenshot(path=str(ARTIFACTS / "dense_features_browser.png"), full_page=True)
    errors = [e for c in cells for e in c["errors"]]
    assert not errors, errors
    assert all(c["count"] is not None for c in cells), "a code cell did not run"
    for c in cells:
        expected = sum((len(params["indices"]) if name == "plot_dense_features" else 1)
                       for name in DENSE_FIGURES if f"dense_viz.{name}(" in c["source"])
        assert c["images"] == c["decoded"] == expected, (c["source"].splitlines()[-1], c["images"], c["decoded"])
    assert sum(c["images"] for c in cells) == 3 + len(params["indices"])
    assert not console, console
