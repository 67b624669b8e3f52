"""01_view_geometry in a real browser: JupyterLab on localhost with a token, Debian's chromium driven
by Playwright (the system browser, never a downloaded one). Runs all cells, checks that the slider
widgets render and that moving one (typed into its readout, and dragged with the mouse) redraws the
figure, that a typo typed into the parameters cell stops the notebook with a one-line "did you mean"
error, and saves screenshots under runs/test-artifacts/."""

import os
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


def launch(p, browser_path):
    return p.chromium.launch(executable_path=browser_path, headless=True,
                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])


def test_a_typo_typed_into_the_parameters_cell_fails_with_did_you_mean(lab, browser_path):
    """In JupyterLab papermill injects nothing: the validation cell reads the parameters cell as run."""
    from playwright import sync_api
    url, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = launch(p, browser_path)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
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
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "view_geometry_typo_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert "unknown parameter 'mask_ratoi' (did you mean 'mask_ratio'?)" in text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1  # the reason, not simlab's stack


def test_view_geometry_notebook_in_chromium(lab, browser_path):
    from playwright import sync_api
    url, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "view_geometry_failure.png").unlink(missing_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(f"{url}/lab/tree/01_view_geometry.ipynb?token={token}", timeout=120_000)
            page.wait_for_selector(".jp-Notebook", timeout=120_000)
            # Run > Run All Cells through JupyterLab's own command (the app is exposed for this test),
            # once the kernel is up: cells sent before that are lost
            page.wait_for_function("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                                   " const s = w && w.sessionContext && w.sessionContext.session;"
                                   " return s && s.kernel && s.kernel.status === 'idle'; }", timeout=120_000)
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
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "view_geometry_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert (ARTIFACTS / "view_geometry_browser.png").stat().st_size > 20_000
