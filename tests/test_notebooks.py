"""The committed notebooks: clean, generated, well-formed; and (lab) the whole tutorial run headless."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

from tproxy_nb.present import report

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = [REPO / "notebooks" / f"{name}.ipynb" for name in report.NOTEBOOKS]


def _generator():
    """scripts/make_notebooks.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_notebooks", REPO / "scripts" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator():
    return _generator()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs or execution counts; regenerate with scripts/make_notebooks.py"


def test_committed_notebooks_are_what_the_script_generates(generator):
    built = generator.build_all()
    assert sorted(built) == sorted(p.name for p in NOTEBOOKS)
    stale = [name for name, nb in built.items() if (REPO / "notebooks" / name).read_text() != generator.serialize(nb)]
    assert not stale, f"{stale} differ from scripts/make_notebooks.py; run python scripts/make_notebooks.py"


def test_generator_check_mode_agrees(generator, tmp_path):
    assert generator.main(["--out", str(tmp_path)]) == 0
    assert generator.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "02_iptables.ipynb").write_text("{}")
    assert generator.main(["--check", "--out", str(tmp_path)]) == 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} parameters cells"
    assert tagged[0].cell_type == "code"
    for name in ("TARGET", "KEY_FILE", "SETTINGS_FILE"):
        assert f"{name} = " in tagged[0].source
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "the first cell is the title"
    assert "What you will learn" in nb.cells[0].source
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source]
    assert "## Clean-up" in headings, f"{path.name} has no clean-up section"
    steps = [h for h in headings if h.startswith("## Step ")]
    assert steps and [int(h.split()[2].rstrip(":")) for h in steps] == list(range(1, len(steps) + 1)), steps
    links = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for other in NOTEBOOKS:
        if other != path:
            assert f"({other.name})" in links, f"{path.name} does not link {other.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_step_is_verified(path):
    """Each 'Step N' section contains at least one code cell that asserts."""
    nb = nbformat.read(path, as_version=4)
    sections: dict[str, list[str]] = {}
    current = None
    for c in nb.cells:
        if c.cell_type == "markdown" and c.source.startswith("## "):
            current = c.source.splitlines()[0] if c.source.startswith("## Step ") else None
            if current:
                sections[current] = []
        elif current and c.cell_type == "code":
            sections[current].append(c.source)
    unverified = [s for s, cells in sections.items() if not any("assert " in src for src in cells)]
    assert not unverified, f"{path.name}: no assert in {unverified}"


def test_parameters_are_injected_papermill_style():
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    i = report.inject_parameters(nb, report.parameters_source("admin@203.0.113.10:22", "key.pem", None))
    assert "parameters" in nb.cells[i].metadata["tags"]
    assert "TARGET = 'admin@203.0.113.10:22'" in nb.cells[i].source
    assert f"KEY_FILE = {str(Path('key.pem').resolve())!r}" in nb.cells[i].source


def test_secret_outputs_are_found_and_scrubbed():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x"), nbformat.v4.new_code_cell("y")])
    marker = "-----BEGIN OPENSSH " + "PRIVATE KEY-----"  # built, so this file holds no key marker itself
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=marker + "\nabc\n")]
    assert report.scrub_secrets(nb) == [1]
    assert "PRIVATE KEY" not in json.dumps(nb.cells[1].outputs)
    assert report.secret_cells(nb) == []


# --------------------------------------------------------------------------- the whole tutorial


def _html_column(cell, column: str) -> list[str]:
    """The values of ``column`` in the DataFrame a cell displayed (read from its text/html output)."""
    from bs4 import BeautifulSoup  # a dependency of nbconvert

    html = next("".join(o["data"]["text/html"]) for o in cell.get("outputs", []) if "text/html" in o.get("data", {}))
    table = BeautifulSoup(html, "html.parser").find("table")
    header = [th.get_text(strip=True) for th in table.find("thead").find_all("tr")[0].find_all("th")]
    rows = [[c.get_text(strip=True) for c in tr.find_all(["th", "td"])] for tr in table.find("tbody").find_all("tr")]
    return [row[header.index(column)] for row in rows]


@pytest.mark.lab
@pytest.mark.timeout(1800)
def test_run_all_against_the_lab(lab_info, tmp_path):
    """Slow (minutes): every notebook executed headless into a report, as `tproxy-nb run` does."""
    out = tmp_path / "report"
    code = report.run_all("lab", out_dir=out, progress=False)
    index = (out / "index.html").read_text() if (out / "index.html").is_file() else ""
    assert code == 0, f"run_all failed; {out / 'index.html'}:\n{index}"
    assert "tproxy_nb" in index and "envoy" in index
    # The index repeats the four outcomes, so a write-up can link one page.
    assert "The four requests" in index and "reset" in index and "denied" in index
    for name in report.NOTEBOOKS:
        assert (out / f"{name}.ipynb").is_file() and (out / f"{name}.html").is_file(), name
        nb = nbformat.read(out / f"{name}.ipynb", as_version=4)
        assert not report.error_outputs(nb), f"{name}: {report.error_outputs(nb)}"
        assert not report.secret_cells(nb), f"{name}: private key in outputs"
        assert f'href="{name}.html"' in index
    testing = nbformat.read(out / "04_testing.ipynb", as_version=4)
    table = [c for c in testing.cells if "outcome-table" in c.metadata.get("tags", [])]
    assert len(table) == 1
    assert _html_column(table[0], "outcome") == ["allowed", "denied", "allowed", "reset"]
    figures = sum(1 for c in testing.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert figures >= 2, f"04_testing shows {figures} figures"


# --------------------------------------------------------------------------- report.run_all without a host


def _tiny_notebook(path: Path, *sources: str) -> Path:
    cells = [nbformat.v4.new_markdown_cell("# tiny"),
             nbformat.v4.new_code_cell('TARGET = "lab"\nKEY_FILE = None\nSETTINGS_FILE = None', metadata={"tags": ["parameters"]})]
    cells += [nbformat.v4.new_code_cell(src) for src in sources]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)
    return path


@pytest.mark.timeout(180)
def test_run_all_names_the_failing_cell_and_writes_what_ran(tmp_path, monkeypatch, capsys):
    src = tmp_path / "nbs"
    src.mkdir()
    _tiny_notebook(src / "a.ipynb", "TARGET")
    _tiny_notebook(src / "b.ipynb", "x = 1", "assert x == 2, 'x is not two'\nprint('unreached')")
    _tiny_notebook(src / "c.ipynb", "1")
    monkeypatch.setattr(report, "NOTEBOOK_DIR", src)
    monkeypatch.setattr(report, "NOTEBOOKS", ("a", "b", "c"))
    out = tmp_path / "out"
    # A non-lab target: run_all must not touch the lab (the notebooks never connect).
    code = report.run_all("admin@203.0.113.10", out_dir=out, progress=False)
    assert code == 1
    err = capsys.readouterr().err
    assert "b.ipynb, cell 3 (\"assert x == 2, 'x is not two'\")" in err, err
    assert "AssertionError: x is not two" in err
    index = (out / "index.html").read_text()
    assert "b.ipynb, cell 3" in index and "skipped" in index
    for name in ("a", "b"):
        assert (out / f"{name}.ipynb").is_file() and (out / f"{name}.html").is_file()
    assert not (out / "c.ipynb").exists()
    ran = nbformat.read(out / "a.ipynb", as_version=4)
    assert ran.cells[1].source.startswith("# Parameters injected by tproxy-nb run")
    assert "admin@203.0.113.10" in ran.cells[2].outputs[0]["data"]["text/plain"]


@pytest.mark.timeout(120)
def test_a_printed_private_key_fails_the_notebook_and_is_removed(tmp_path):
    path = _tiny_notebook(tmp_path / "leak.ipynb", "print('-----BEGIN ' + 'PRIVATE' + ' KEY-----')")
    run = report.execute_notebook(path, report.parameters_source("lab", None, None), tmp_path / "out", progress=False)
    assert run.status == "failed" and run.failed_cell == 2 and "private-key" in run.error
    assert "PRIVATE KEY" not in (tmp_path / "out" / "leak.ipynb").read_text()
    assert "PRIVATE KEY" not in (tmp_path / "out" / "leak.html").read_text()
