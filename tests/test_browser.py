"""The course as a student meets it: JupyterLab started from this environment and driven through its UI by headless
Chromium (Selenium with Debian's chromium and chromium-driver, installed by .ci/run).

For each of BROWSER_NOTEBOOKS (00, a Part 1 technique chapter, a Part 2 chapter), on the smoke profile (set for the
server's kernels with COURSEKIT_PROFILE, as a student would from a terminal): open it in Lab, choose Run > Run All
Cells in the menu, wait until every cell has run and the kernel is idle, save it from the menu, then assert on the
page and on the saved file: no error output, every cell that shows a plot in the committed notebook shows an image,
the progress bars rendered as widgets, the kernel is the course's ("Python (coursekit)", running this environment's
Python). A screenshot of each is kept in ``runs/browser-test/`` (COURSEKIT_BROWSER_OUT changes it).

Then the student edition of 00 in Lab: the exercise stub fails, a wrong answer pasted fails its check with the hint,
the solution pasted passes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
BROWSER_NOTEBOOKS = ("00_baseline", "05_layer_trimming", "08_transformer_distillation")
OUT = Path(os.environ.get("COURSEKIT_BROWSER_OUT", REPO / "runs" / "browser-test"))
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
RUN_TIMEOUT = 420  # seconds for one notebook's Run All on the smoke profile (about 20-40 s here)

pytestmark = [pytest.mark.browser, pytest.mark.notebook]
if not (CHROMIUM and DRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("the browser test needs Debian's chromium and chromium-driver: .ci/run installs them "
                           "(apt-get install chromium chromium-driver)")
    pytestmark.append(pytest.mark.skip(reason="no chromium / chromedriver here (apt-get install chromium chromium-driver)"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, cifar_dir):
    """JupyterLab on 127.0.0.1 (a free port, a token, no browser of its own) over a copy of the notebooks, so that
    saving from the browser never touches the committed ones. Yields (base url, token, root folder)."""
    root = tmp_path_factory.mktemp("lab")
    for stem in BROWSER_NOTEBOOKS:
        shutil.copy(NOTEBOOKS / f"{stem}.ipynb", root)
    from coursekit.editions import write_student_editions

    write_student_editions([NOTEBOOKS / "00_baseline.ipynb"], root / "student")
    settings = root.parent / "lab-settings"  # every cell rendered in the page (no windowing), no news pop-up
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, COURSEKIT_PROFILE="smoke", COURSEKIT_DATA=cifar_dir,
               COURSEKIT_RUNS_BASE=str(tmp_path_factory.mktemp("runs")))
    log = open(root.parent / "lab.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen([str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", "--allow-root",
                               "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
                               f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={settings}"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.terminate()
                raise RuntimeError(f"JupyterLab did not start; see {root.parent / 'lab.log'}") from None
            time.sleep(0.3)
    yield base, token, root
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def _wait(what: str, condition, timeout: float, every: float = 0.5):
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(every)


def _js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def _menu(driver, menu: str, label: str) -> None:
    """Click a menu of Lab's menu bar, then its item called ``label`` (e.g. Run > Run All Cells)."""
    from selenium.webdriver.common.by import By

    bar = [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if e.text.strip() == menu]
    assert bar, f"no {menu!r} menu in Lab's menu bar"
    bar[0].click()

    def item():
        found = [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-item:not(.lm-mod-disabled)")
                 if e.find_elements(By.CSS_SELECTOR, ".lm-Menu-itemLabel")
                 and e.find_element(By.CSS_SELECTOR, ".lm-Menu-itemLabel").text.strip() == label]
        return found[0] if found else None

    _wait(f"the menu item {menu} > {label}", item, 10).click()


def _kernel_state(driver) -> dict:
    """What the notebook's toolbar and prompts show: kernel name, status, and how many code cells are pending."""
    return _js(driver, """
        const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
        if (!panel) { return {kernel: null, status: null, prompts: []}; }
        const prompts = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')).map(e => e.textContent.trim());
        const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator');
        const name = panel.querySelector('.jp-Toolbar-kernelName');
        return {kernel: name && name.textContent.trim(), status: ind && ind.getAttribute('data-status'), prompts: prompts};
    """)


def _open(driver, lab, path: str) -> None:
    base, token, _ = lab
    workspace = Path(path).stem.replace("_", "-")  # a fresh workspace per notebook: one tab, nothing restored
    driver.get(f"{base}/lab/workspaces/{workspace}/tree/{path}?token={token}&reset")
    _wait(f"{path} open with its kernel idle", lambda: (lambda s: s["kernel"] and s["status"] == "idle" and s["prompts"])(
        _kernel_state(driver)), 120)


def _run_all_and_wait(driver) -> dict:
    _menu(driver, "Run", "Run All Cells")
    _wait("the run to start", lambda: any("*" in p for p in _kernel_state(driver)["prompts"]), 30, every=0.2)

    def finished():
        s = _kernel_state(driver)
        done = s["status"] == "idle" and all(p not in ("[ ]:", "[*]:") and p[1:-2].isdigit() for p in s["prompts"])
        return s if done else None

    return _wait("every cell to run and the kernel to be idle", finished, RUN_TIMEOUT)


def _save(driver, path: Path) -> nbformat.NotebookNode:
    before = path.stat().st_mtime_ns
    _menu(driver, "File", "Save Notebook")
    _wait(f"{path.name} saved", lambda: path.stat().st_mtime_ns != before, 30)
    time.sleep(0.5)  # the write completes
    return nbformat.read(path, as_version=4)


def _screenshot(driver, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    shot = OUT / f"{name}.png"
    driver.save_screenshot(str(shot))
    return shot


def _has_image(cell) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


@pytest.mark.parametrize("stem", BROWSER_NOTEBOOKS)
def test_run_all_cells_in_jupyterlab(lab, browser, stem):
    base, token, root = lab
    _open(browser, lab, f"{stem}.ipynb")
    state = _run_all_and_wait(browser)
    assert state["kernel"] == "Python (coursekit)", "the notebook opened on the course's kernel, not a chosen one"
    # the kernel the page talks to runs this environment's Python
    with urllib.request.urlopen(f"{base}/api/sessions?token={token}") as r:
        sessions = [s for s in json.load(r) if s["path"].endswith(f"{stem}.ipynb")]
    assert sessions and sessions[0]["kernel"]["name"] == "coursekit"
    with urllib.request.urlopen(f"{base}/api/kernelspecs?token={token}") as r:
        argv = json.load(r)["kernelspecs"]["coursekit"]["spec"]["argv"]
    assert Path(argv[0]).resolve() == Path(sys.executable).resolve(), f"kernel runs {argv[0]}, not {sys.executable}"

    saved = _save(browser, root / f"{stem}.ipynb")
    code = [c for c in saved.cells if c.cell_type == "code"]
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(code) for o in c.outputs if o.output_type == "error"]
    assert not errors, f"error output in Lab: {errors}"
    committed = [c for c in nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4).cells if c.cell_type == "code"]
    plots = [i for i, c in enumerate(committed) if _has_image(c)]
    assert plots, "the committed notebook has plot cells"
    missing = [i for i in plots if not _has_image(code[i])]
    assert not missing, f"code cells {missing} show a plot in the committed notebook but no image in Lab"
    # on the page: the images and the progress bars as widgets (not text)
    dom = _js(browser, """
        const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
        return {images: panel.querySelectorAll('.jp-OutputArea-output img').length,
                bars: panel.querySelectorAll('.jp-OutputArea-output .jupyter-widgets.widget-hprogress .progress-bar').length,
                tracebacks: Array.from(panel.querySelectorAll('.jp-OutputArea-output'))
                    .filter(e => e.textContent.includes('Traceback (most recent call last)')).length};
    """)
    assert dom["images"] >= len(plots), dom
    bars = sum("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for c in code for o in c.outputs)
    assert dom["bars"] >= bars, f"{bars} progress bars in the outputs, {dom['bars']} drawn as widgets: {dom}"
    if stem == "00_baseline":  # it trains the base model with a progress bar (later chapters reuse it)
        assert bars >= 1
    assert dom["tracebacks"] == 0, dom
    first_plot = _js(browser, """
        const imgs = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img');
        if (imgs.length) { imgs[0].scrollIntoView({block: 'center'}); } return imgs.length;""")
    assert first_plot
    time.sleep(0.5)
    shot = _screenshot(browser, stem)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def _cell_output_text(driver, index: int) -> str:
    return _js(driver, """
        const cells = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell');
        const out = cells[arguments[0]].querySelector('.jp-OutputArea');
        return out ? out.textContent : '';""", index)


def _paste_into_cell(driver, index: int, text: str) -> None:
    """Click into the cell's editor, select all, and paste ``text`` (a paste event with the text, as the
    clipboard delivers it: the editor inserts it as it is, no auto-indent)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    editor = driver.find_elements("css selector", ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")[index] \
        .find_element("css selector", ".cm-content")
    editor.click()
    ActionChains(driver).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).perform()
    _js(driver, """
        const dt = new DataTransfer(); dt.setData('text/plain', arguments[1]);
        arguments[0].dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}));
    """, editor, text)
    first, last = text.splitlines()[0], text.splitlines()[-1]
    _wait("the pasted text in the editor", lambda: first in editor.text and last in editor.text, 10)


def _run_selected_and_wait(driver, index: int) -> str:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    before = _kernel_state(driver)["prompts"]
    ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()

    def done():
        s = _kernel_state(driver)
        return s["status"] == "idle" and s["prompts"] != before and "[*]:" not in s["prompts"]

    _wait("the cell to run", done, 60)
    return _cell_output_text(driver, index)


def test_student_edition_exercise_in_jupyterlab(lab, browser):
    """00's first exercise in the student edition: the stub fails, a wrong answer fails its check with the check's
    hint, the solution passes (the check returns True)."""
    from selenium.webdriver.common.by import By

    _open(browser, lab, "student/00_baseline.ipynb")
    cells = browser.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
    index = next(i for i, c in enumerate(cells) if "def conv_params" in c.get_attribute("textContent"))
    cells[index].find_element(By.CSS_SELECTOR, ".jp-InputPrompt").click()  # select it (command mode)
    _menu(browser, "Run", "Run All Above Selected Cell")
    _wait("the cells above to run", lambda: (lambda s: s["status"] == "idle" and not any("*" in p for p in s["prompts"]))(
        _kernel_state(browser)), RUN_TIMEOUT)
    out = _run_selected_and_wait(browser, index)
    assert "NotImplementedError" in out and "exercise: write conv_params" in out, out
    call = "\n\n\ncheck_result = checks.check_conv_params(conv_params)\ncheck_result"
    _paste_into_cell(browser, index, "def conv_params(c_in, c_out, k, bias):\n    return c_out * c_in * k * k" + call)
    out = _run_selected_and_wait(browser, index)
    assert "AssertionError" in out and "Hint: each of the c_out filters has c_in * k * k weights" in out, out
    _paste_into_cell(browser, index, "def conv_params(c_in, c_out, k, bias):\n"
                                     "    return c_out * c_in * k * k + (c_out if bias else 0)" + call)
    out = _run_selected_and_wait(browser, index)
    assert "Error" not in out and "True" in out, out
    cells[index].location_once_scrolled_into_view  # noqa: B018 (scrolls the exercise into the screenshot)
    print(f"screenshot: {_screenshot(browser, 'student_00_exercise')}")
