"""The notebooks: each MyST source in sync with its committed .ipynb, the shape every notebook keeps,
and (lab) the whole tutorial run headless, every step's verification run and shown."""

from __future__ import annotations

import ast
import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import jupytext
import nbformat
import pytest

from tproxy_nb import cli
from tproxy_nb.present import bundle, report
from tproxy_nb.settings import TLS_DENY_MODES

REPO = Path(__file__).resolve().parent.parent
#: Where the lab run's report goes, under the session's base temp: the replay test reads it.
LAB_RUN = "lab-run-report"
NOTEBOOKS = [REPO / "notebooks" / f"{name}.ipynb" for name in report.NOTEBOOKS]
PARAMETERS = {"TARGET", "KEY_FILE", "KNOWN_HOSTS", "SETTINGS_FILE"}
#: What notebook N catches up on before it starts: the stage of chain.up the notebooks before it reached.
CATCH_UP = {
    "01_setup": None,
    "02_iptables": "provision",
    "03_envoy": "firewall",
    "04_testing": "envoys",
    "05_remedies": "envoys",
    "06_explore": None,  # it reads a recorded run: nothing to catch up on
}


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def pair_differences(md: Path, ipynb: Path) -> list[str]:
    """How the two files of a jupytext pair differ, cell by cell (type, source, tags); empty when in sync."""
    a, b = jupytext.read(md), jupytext.read(ipynb)
    found = []
    if len(a.cells) != len(b.cells):
        found.append(f"{md.name} has {len(a.cells)} cells, {ipynb.name} {len(b.cells)}")
    for i, (x, y) in enumerate(zip(a.cells, b.cells)):
        if (x.cell_type, x.source, tags(x)) != (y.cell_type, y.source, tags(y)):
            found.append(
                f"cell {i}: {x.cell_type} {x.source[:60]!r} {tags(x)} != {y.cell_type} {y.source[:60]!r} {tags(y)}"
            )
    return found


def sections(nb) -> list[tuple[str, list]]:
    """``(heading, cells)`` for each ``## `` section, in order (a ``###`` stays inside its section)."""
    found: list[tuple[str, list]] = []
    for cell in nb.cells:
        first = cell.source.splitlines()[0] if cell.source else ""
        if cell.cell_type == "markdown" and first.startswith("## "):
            found.append((first, []))
        elif found:
            found[-1][1].append(cell)
    return found


def steps(nb) -> list[tuple[str, list]]:
    return [(h, cells) for h, cells in sections(nb) if h.startswith("## Step ")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs or execution counts; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_and_its_myst_source_are_in_sync(path):
    md = path.with_suffix(".md")
    assert md.is_file(), f"{md.name} is missing: notebooks are authored in MyST (jupytext --set-formats ipynb,md:myst)"
    text = md.read_text()
    assert "formats: ipynb,md:myst" in text and "format_name: myst" in text, (
        f"{md.name} lacks its jupytext pairing header"
    )
    differences = pair_differences(md, path)
    assert not differences, f"{md.name} and {path.name} differ; run jupytext --sync notebooks/*.md:\n" + "\n".join(
        differences
    )


def test_a_pair_that_differs_is_found(tmp_path):
    """The sync check sees one edited line in the Markdown, and a cell that lost its tag."""
    md, ipynb = REPO / "notebooks" / "02_iptables.md", REPO / "notebooks" / "02_iptables.ipynb"
    shutil.copy(ipynb, tmp_path / ipynb.name)
    edited = tmp_path / md.name
    edited.write_text(md.read_text().replace("print(hook.line)", "hook.line", 1))
    assert any("print(hook.line)" in d for d in pair_differences(edited, tmp_path / ipynb.name))
    untagged = tmp_path / "untagged.md"
    untagged.write_text(md.read_text().replace(":tags: [verify]\n", "", 1))
    assert any("['verify']" in d for d in pair_differences(untagged, tmp_path / ipynb.name))
    shutil.copy(md, tmp_path / "same.md")
    assert pair_differences(tmp_path / "same.md", tmp_path / ipynb.name) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shape(path):
    """Title and what you will learn; parameters; one setup cell; Step N sections each ending in a
    verification; clean-up; links to the other notebooks."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "the first cell is the title"
    assert "What you will learn" in nb.cells[0].source
    params = [c for c in nb.cells if "parameters" in tags(c)]
    assert len(params) == 1 and params[0].cell_type == "code", f"{path.name}: {len(params)} parameters cells"
    assigned = {t.id for node in ast.parse(params[0].source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert assigned == PARAMETERS, f"{path.name}: the parameters cell sets {sorted(assigned)}"
    setup = [c for c in nb.cells if "setup" in tags(c)]
    assert len(setup) == 1, f"{path.name}: {len(setup)} cells tagged setup"
    assert "tutorial.open(TARGET, KEY_FILE, KNOWN_HOSTS, SETTINGS_FILE)" in setup[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code.index(setup[0]) == code.index(params[0]) + 1, "the setup cell comes right after the parameters"
    opening = re.compile(r"tutorial\.open\(|targets\.connect\(|load_settings\(|^\s*(import|from) ", re.MULTILINE)
    opened_elsewhere = [c.source.splitlines()[0] for c in code if c is not setup[0] and opening.search(c.source)]
    assert not opened_elsewhere, f"{path.name}: imports or connections outside the setup cell: {opened_elsewhere}"
    found = steps(nb)
    numbers = [int(h.split()[2].rstrip(":")) for h, _ in found]
    assert numbers and numbers == list(range(1, len(found) + 1)), [h for h, _ in found]
    for heading, cells in found:
        last = [c for c in cells if c.cell_type == "code"][-1:]
        assert last and "verify" in tags(last[0]), f"{path.name}: {heading!r} does not end in a cell tagged verify"
    headings = [h for h, _ in sections(nb)]
    assert "## Clean-up" in headings and headings.index("## Clean-up") > headings.index(found[-1][0]), (
        f"{path.name} has no clean-up section after its steps"
    )
    links = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for other in NOTEBOOKS:
        if other != path:
            assert f"({other.name})" in links, f"{path.name} does not link {other.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_catching_up_is_one_call_to_chain_up(path):
    """A notebook run on its own first does what the ones before it did, with chain.up and nothing else."""
    nb = nbformat.read(path, as_version=4)
    calls = [c.source for c in nb.cells if c.cell_type == "code" and "chain.up(" in c.source]
    stage = CATCH_UP[path.stem]
    if stage is None:
        assert not calls, f"{path.name} is the first notebook: it has nothing to catch up on"
        return
    assert len(calls) == 1, f"{path.name}: {len(calls)} cells call chain.up"
    assert f'through="{stage}"' in calls[0] and "guard_seconds=GUARD" in calls[0], calls[0]


def test_parameters_are_injected_papermill_style():
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    source = report.parameters_source("admin@203.0.113.10:22", "key.pem", None, known_hosts="pinned_hosts")
    i = report.inject_parameters(nb, source)
    assert "parameters" in nb.cells[i].metadata["tags"]
    assigned = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(nb.cells[i].source).body}
    assert assigned == {
        "TARGET": "admin@203.0.113.10:22",
        "KEY_FILE": str(Path("key.pem").resolve()),
        "KNOWN_HOSTS": str(Path("pinned_hosts").resolve()),
        "SETTINGS_FILE": None,
    }
    assert set(assigned) == PARAMETERS


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
    html = next("".join(o["data"]["text/html"]) for o in cell.get("outputs", []) if "text/html" in o.get("data", {}))
    return _table_column(html, column)


def _table_column(html: str, column: str) -> list[str]:
    """The values of ``column`` in the first table of ``html`` (a DataFrame as pandas' Styler shows it)."""
    from bs4 import BeautifulSoup  # a dependency of nbconvert

    table = BeautifulSoup(html, "html.parser").find("table")
    header = [th.get_text(strip=True) for th in table.find("thead").find_all("tr")[0].find_all("th")]
    rows = [[c.get_text(strip=True) for c in tr.find_all(["th", "td"])] for tr in table.find("tbody").find_all("tr")]
    return [row[header.index(column)] for row in rows]


@pytest.mark.lab
@pytest.mark.timeout(1800)
def test_run_all_against_the_lab(lab_info, tmp_path_factory, capfd):
    """Slow (minutes): every notebook executed headless into a report, as `tproxy-nb run` does; every
    step's verification ran and said what it checked; the run's stderr carries no warning; the run's
    data bundle is complete, sealed and free of keys (the replay test below re-reads it)."""
    out = tmp_path_factory.getbasetemp() / LAB_RUN
    code = report.run_all("lab", out_dir=out, progress=False)
    index = (out / "index.html").read_text() if (out / "index.html").is_file() else ""
    assert code == 0, f"run_all failed; {out / 'index.html'}:\n{index}"
    err = capfd.readouterr().err
    assert not warning_lines(err), "tproxy-nb run printed warnings:\n" + "\n".join(warning_lines(err))
    assert "tproxy_nb" in index and "envoy" in index
    # The index repeats the four outcomes, so a write-up can link one page.
    assert "The four requests" in index and "reset" in index and "denied" in index
    for name in report.NOTEBOOKS:
        assert (out / f"{name}.ipynb").is_file() and (out / f"{name}.html").is_file(), name
        nb = nbformat.read(out / f"{name}.ipynb", as_version=4)
        assert not report.error_outputs(nb), f"{name}: {report.error_outputs(nb)}"
        assert not report.secret_cells(nb), f"{name}: private key in outputs"
        assert f'href="{name}.html"' in index
        for heading, cells in steps(nb):
            last = [c for c in cells if c.cell_type == "code"][-1]
            assert "verify" in tags(last), f"{name}: {heading!r} does not end in a verification"
            shown = [o for o in last.get("outputs", []) if o.get("output_type") == "execute_result"]
            said = shown[0]["data"]["text/plain"].lstrip("f'\"") if shown else ""
            assert last.get("execution_count") and said.startswith("✓"), (
                f"{name}: the verification of {heading!r} did not run or showed nothing: {last.get('outputs')}"
            )
    testing = nbformat.read(out / "04_testing.ipynb", as_version=4)
    table = [c for c in testing.cells if "outcome-table" in c.metadata.get("tags", [])]
    assert len(table) == 1
    assert _html_column(table[0], "outcome") == ["allowed", "denied", "allowed", "reset"]
    figures = sum(1 for c in testing.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert figures >= 2, f"04_testing shows {figures} figures"
    # The write-up opens with the headline, made from the run's data bundle.
    assert index.index("Headline") < index.index("Settings used") < index.index("The notebooks")
    assert "20/20 requests ended as expected" in index and "igw: 5 allowed, 5 denied" in index, index[:3000]
    assert "curl exit 35" in index and "NaN" not in index and "&lt;NA&gt;" not in index
    # The remedies table notebook 5 measured, in the index: one row per mode and the explicit proxy, each
    # with curl's exit code and the packets filled in.
    remedies = index[index.index('<section id="remedies">') :]
    rows = dict(zip(_table_column(remedies, "remedy"), _table_column(remedies, "curl")))
    assert set(rows) == {*TLS_DENY_MODES, "deny-page, egress CA trusted", "explicit proxy (curl -x)"}, rows
    assert all(re.match(r"exit \d+: \S", said) for said in rows.values()), rows
    assert rows["reset"].startswith("exit 35") and rows["deny-page"].startswith("exit 60"), rows
    assert rows["explicit proxy (curl -x)"].startswith("exit 56"), rows
    assert all(_table_column(remedies, "packets")), "a remedy without its packets"
    data = out / "data"
    files = {f["path"] for f in bundle.verify(data)["files"]}
    wanted = {"run.json", "facts.json", "settings.yaml", "curl/results.json", "curl/results.csv", "iptables/nat.rules"}
    wanted |= {f"logs/{n}.{kind}.log" for n in ("sidecar", "igw", "igw_http") for kind in ("debug", "access")}
    wanted |= {f"stats/{n}.{when}.txt" for n in ("sidecar", "igw", "igw_http") for when in ("before", "after")}
    wanted |= {f"configs/{n}.yaml" for n in ("sidecar", "igw", "igw_http")}
    assert wanted <= files, sorted(wanted - files)
    keys = [p for p in data.rglob("*") if p.is_file() and bundle.private_keys(p.read_text(errors="replace"))]
    assert keys == [], f"private keys in the bundle: {keys}"
    assert "-A ENVOY_EGRESS" in (data / "iptables" / "nat.rules").read_text()
    facts = json.loads((data / "facts.json").read_text())
    assert {"os", "kernel", "curl", "openssl", "envoy", "envoy build", "iptables backend"} <= set(facts), facts
    for name in report.NOTEBOOKS:
        html = (out / f"{name}.html").read_text()
        assert "<script src=" not in html and "unpkg.com" not in html, f"{name}.html loads scripts from a CDN"


@pytest.mark.lab
@pytest.mark.destructive
@pytest.mark.timeout(600)
def test_a_replay_after_the_lab_is_gone_shows_the_same_outcomes(tmp_path_factory, tmp_path, capfd):
    """The lab run's bundle, with the lab taken down: `tproxy-nb run --target replay:DIR` needs no host."""
    from tproxy_nb import lab

    recorded = tmp_path_factory.getbasetemp() / LAB_RUN
    if not (recorded / "data" / "manifest.json").is_file():
        pytest.skip("needs the bundle of test_run_all_against_the_lab from the same session")
    lab.down()
    assert not lab.status().healthy
    out = tmp_path / "replay"
    assert cli.main(["run", "--target", f"replay:{recorded / 'data'}", "--out", str(out)]) == 0
    assert "ssh" not in capfd.readouterr().err.lower()

    def outcomes(path):
        nb = nbformat.read(path, as_version=4)
        table = [c for c in nb.cells if "outcome-table" in tags(c)]
        return [_html_column(table[0], column) for column in ("case", "outcome", "http_code", "exit_code")]

    assert outcomes(out / "06_explore.ipynb") == outcomes(recorded / "06_explore.ipynb")
    assert outcomes(out / "06_explore.ipynb")[1] == _html_column(
        next(c for c in nbformat.read(recorded / "04_testing.ipynb", as_version=4).cells if "outcome-table" in tags(c)),
        "outcome",
    )
    assert not (out / "01_setup.html").exists()
    index = (out / "index.html").read_text()
    assert "20/20 requests ended as expected" in index and "not run: a replay has no host" in index


# --------------------------------------------------------------------------- report.run_all without a host


def test_the_index_shows_the_remedies_table_notebook_5_displayed(tmp_path):
    table = "<table><thead><tr><th>remedy</th><th>curl</th></tr></thead><tbody><tr><td>sni</td><td>exit 35: x</td></tr>"
    cell = nbformat.v4.new_code_cell("table(remedies)", metadata={"tags": ["remedies-table"]})
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/html": table + "</tbody></table>"})]
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1"), cell]), tmp_path / "05_remedies.ipynb"
    )
    section = report.remedies_section(tmp_path)
    assert section is not None and 'href="05_remedies.html"' in section
    assert _table_column(section, "curl") == ["exit 35: x"]
    index = report.render_index(
        [], target="lab", started=datetime.now(timezone.utc), seconds=1, versions={}, remedies=section
    )
    assert index.index("Remedies, measured") < index.index("The notebooks")
    cell.outputs = []  # the cell did not run: no table, no section
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), tmp_path / "05_remedies.ipynb")
    assert report.remedies_section(tmp_path) is None and report.remedies_section(tmp_path / "nowhere") is None


def warning_lines(stderr: str) -> list[str]:
    """Lines of a run's stderr that warn (a kernel's transport warning, a Python warning)."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if "warning" in line.lower()]


def _tiny_notebook(path: Path, *sources: str) -> Path:
    params = 'TARGET = "lab"\nKEY_FILE = None\nKNOWN_HOSTS = None\nSETTINGS_FILE = None'
    cells = [
        nbformat.v4.new_markdown_cell("# tiny"),
        nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
    ]
    cells += [nbformat.v4.new_code_cell(src) for src in sources]
    nb = nbformat.v4.new_notebook(
        cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nbformat.write(nb, path)
    return path


@pytest.mark.timeout(180)
def test_run_all_names_the_failing_cell_and_writes_what_ran(tmp_path, monkeypatch, capfd):
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
    err = capfd.readouterr().err
    # The kernels' own stderr reaches ours: none of them may warn (ipykernel does about a TCP transport).
    assert not warning_lines(err), warning_lines(err)
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


@pytest.mark.timeout(120)
def test_tproxy_nb_run_hands_known_hosts_to_the_notebooks(tmp_path, monkeypatch):
    """`tproxy-nb run --known-hosts FILE` reaches the notebooks as KNOWN_HOSTS (absolute), with the key file."""
    src = tmp_path / "nbs"
    src.mkdir()
    _tiny_notebook(src / "a.ipynb", "print(TARGET, KEY_FILE, KNOWN_HOSTS)")
    monkeypatch.setattr(report, "NOTEBOOK_DIR", src)
    monkeypatch.setattr(report, "NOTEBOOKS", ("a",))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code = cli.main(
        ["run", "--target", "admin@203.0.113.10", "--key", "k.pem", "--known-hosts", "pinned", "--out", str(out)]
    )
    assert code == 0
    ran = nbformat.read(out / "a.ipynb", as_version=4)
    printed = ran.cells[2].outputs[0]["text"].split()
    assert printed == ["admin@203.0.113.10", str(tmp_path / "k.pem"), str(tmp_path / "pinned")]


# --------------------------------------------------------------------------- tutorial helpers (pure)


def test_admin_counters_are_parsed_and_what_moved_is_kept():
    from tproxy_nb import tutorial
    from tproxy_nb.render.envoy import parse_counters

    before = parse_counters(
        "http.igw.rbac.allowed: 0\nhttp.igw.rbac.denied: 0\n"
        "cluster_manager.active_clusters: 2\nserver.version: 1.40.0\n"
        "igw::127.0.0.1:12010::cx_total::0\nigw::127.0.0.1:12010::health_flags::healthy"
    )
    assert before == {
        "http.igw.rbac.allowed": 0,
        "http.igw.rbac.denied": 0,
        "cluster_manager.active_clusters": 2,
        "igw::127.0.0.1:12010::cx_total": 0,
    }
    after = {**before, "http.igw.rbac.denied": 5, "igw::127.0.0.1:12010::cx_total": 3}
    moved = tutorial.counter_changes(before, after)
    assert moved.to_dict("records") == [
        {"counter": "http.igw.rbac.denied", "before": 0, "after": 5, "change": 5},
        {"counter": "igw::127.0.0.1:12010::cx_total", "before": 0, "after": 3, "change": 3},
    ]


def test_clusters_table_and_display_have_no_index_or_missing_values():
    import pandas as pd

    from tproxy_nb import tutorial

    text = (
        "igw::127.0.0.1:12010::cx_active::1\nigw::127.0.0.1:12010::cx_total::4\n"
        "igw::127.0.0.1:12010::rq_total::4\nigw::127.0.0.1:12010::health_flags::healthy\n"
        "igw::observability_name::igw"
    )
    clusters = tutorial.parse_clusters(text)
    assert clusters.to_dict("records") == [
        {
            "cluster": "igw",
            "host": "127.0.0.1:12010",
            "cx_active": "1",
            "cx_total": "4",
            "health_flags": "healthy",
            "rq_total": "4",
        }
    ]
    html = tutorial.table(pd.DataFrame({"a": [1, None], "b": pd.array([None, 2], dtype="Int64")})).to_html()
    assert "nan" not in html.lower() and "&lt;NA&gt;" not in html and "None" not in html
    assert "row_heading" not in html, "the index is shown"
