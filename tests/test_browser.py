"""The notebooks in a real JupyterLab, driven by headless Chromium (Selenium + Debian's chromium-driver).

JupyterLab serves a temporary *copy* of notebooks/ (so autosave never touches
the committed files) on 127.0.0.1 with a random port and token, isolated
config/data/runtime/settings directories, and no news or update checks.
Screenshots go to build/screenshots/.

Needs: apt-get install chromium chromium-driver; pip install selenium.
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
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.lab]

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "build" / "screenshots"
NOTEBOOKS = ("01_setup", "02_iptables", "03_envoy", "04_testing", "05_remedies", "06_explore")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
JUPYTER = Path(sys.executable).parent / "jupyter"
#: Headless, root-safe, and quiet: no first-run UI, no background downloads or phoning home.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)

if not CHROMIUM or not CHROMEDRIVER:
    pytest.skip(
        "chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.webdriver.chrome.service import Service  # noqa: E402  (after the skip checks on purpose)
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(settings_dir: Path) -> None:
    """User settings: every cell in the DOM (no virtual scrolling), no news or update pop-ups."""
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for rel, data in files.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    """A JupyterLab server on a copy of notebooks/; yields (base URL, token)."""
    root = tmp_path_factory.mktemp("jupyterlab")
    work = root / "notebooks"
    shutil.copytree(REPO / "notebooks", work)
    _write_settings(root / "settings")
    from test_bundle import make_bundle

    # 06_explore reads the last run's bundle: one recorded from the captured chain logs.
    data = make_bundle(root / "data")
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_DATA_DIR": str(root / "data"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "TPROXY_NB_DATA": str(data),
    }
    cmd = [
        str(JUPYTER),
        "lab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",
        f"--ServerApp.root_dir={work}",
        f"--LabApp.user_settings_dir={root / 'settings'}",
        f"--LabApp.workspaces_dir={root / 'workspaces'}",
        "--LabApp.news_url=None",
    ]
    log = open(root / "jupyter.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{(root / 'jupyter.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within 60 s:\n{(root / 'jupyter.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a fresh profile, driven through Debian's chromedriver."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _open(browser, jupyter, name: str):
    base, token = jupyter
    browser.get(f"{base}/lab/tree/{name}.ipynb?token={token}")
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    # Rendered when every cell is in the DOM and the title's markdown is turned into a heading.
    WebDriverWait(browser, 90).until(
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"))
            == len(nb.cells)
            and d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownCell h1")
        )
    )
    return nb


def _cells(browser):
    return browser.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_renders_with_title_and_cells(browser, jupyter, name):
    nb = _open(browser, jupyter, name)
    title = nb.cells[0].source.splitlines()[0].lstrip("# ").strip()
    heading = browser.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownCell h1")
    assert title in heading.text
    cells = _cells(browser)
    kinds = ["code" if "jp-CodeCell" in c.get_attribute("class") else "markdown" for c in cells]
    assert kinds == [c.cell_type for c in nb.cells]
    params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    assert 'TARGET = "lab"' in cells[params].text
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def _run_cells(browser, first: int, last: int) -> None:
    """Select cell ``first`` in command mode (its prompt area), then Shift+Enter down to cell ``last``.

    Markdown cells in between are just rendered.
    """
    prompt = _cells(browser)[first].find_element(By.CSS_SELECTOR, ".jp-InputPrompt")
    ActionChains(browser).move_to_element(prompt).click().perform()
    keys = ActionChains(browser).key_down(Keys.SHIFT)
    for _ in range(last - first + 1):
        keys = keys.send_keys(Keys.ENTER)
    keys.key_up(Keys.SHIFT).perform()


@pytest.mark.timeout(300)
def test_running_the_first_cells_of_04_shows_output(browser, jupyter):
    """Run the parameters cell (no output) and the setup cell, whose environment table names tproxy_nb's version."""
    nb = _open(browser, jupyter, "04_testing")
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    first, second = code[0], code[1]
    assert "parameters" in nb.cells[first].metadata["tags"]
    _run_cells(browser, first, second)
    from tproxy_nb import __version__

    def shown(d):
        outputs = _cells(d)[second].find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
        return any(__version__ in o.text for o in outputs)

    try:
        WebDriverWait(browser, 120).until(shown)
    finally:
        browser.save_screenshot(str(SCREENSHOTS / "04_testing-run.png"))
    assert "[1]" in _cells(browser)[first].find_element(By.CSS_SELECTOR, ".jp-InputPrompt").text


@pytest.mark.timeout(300)
def test_the_log_explorer_of_06_answers_a_control(browser, jupyter):
    """Run 06_explore cell by cell up to its explorer; picking another process in it shows that process's records."""
    from selenium.webdriver.support.ui import Select

    nb = _open(browser, jupyter, "06_explore")
    explorer = next(i for i, c in enumerate(nb.cells) if "widgets.log_explorer(" in c.source)
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    _run_cells(browser, first, explorer)

    def count(d) -> str:
        found = _cells(d)[explorer].find_elements(By.XPATH, ".//*[contains(text(), 'records shown')]/..")
        return found[0].text if found else ""

    try:
        WebDriverWait(browser, 180).until(lambda d: "records shown" in count(d))
        before = count(browser)
        process = _cells(browser)[explorer].find_element(By.CSS_SELECTOR, ".widget-dropdown select")
        Select(process).select_by_visible_text("igw")
        WebDriverWait(browser, 60).until(lambda d: count(d) and count(d) != before)
    finally:
        browser.save_screenshot(str(SCREENSHOTS / "06_explore-explorer.png"))
    assert "records shown" in count(browser)
