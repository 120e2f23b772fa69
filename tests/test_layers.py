"""The package's layers, enforced from its imports: a newcomer can trust the folder names.

Each subpackage may import only the layers below it (its ``__init__`` says which). Read from
the source with ``ast``, so a lazy import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tproxy_nb"

#: Modules every layer may use: errors, the marks, settings and the progress-bar switch.
BASE = {"errors", "marks", "progress", "settings", "__init__"}
#: What each layer may import, besides itself and BASE (remote gets less: it knows nothing of the tutorial).
ALLOWED: dict[str, set[str]] = {
    "remote": {"errors", "progress"},
    "render": BASE,
    "analysis": BASE | {"render"},
    "steps": BASE | {"remote", "render", "analysis"},
    "lab": BASE | {"remote", "render"},
    "present": BASE | {"analysis", "render", "steps", "lab", "targets"},
    "targets": BASE | {"remote", "lab"},
    "tutorial": BASE | {"remote", "render", "analysis", "steps", "present", "lab", "targets"},
}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def package_imports(path: Path) -> set[str]:
    """Top-level names of tproxy_nb that ``path`` imports (``tproxy_nb.steps.plan`` -> ``steps``)."""
    rel = path.relative_to(PACKAGE)
    depth = len(rel.parts) - 1  # 0 for tproxy_nb/x.py, 1 for tproxy_nb/sub/x.py
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "tproxy_nb" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "tproxy_nb":
                    continue
                rest = parts[1:]
            else:
                if node.level - 1 > depth:
                    continue
                base = list(rel.parts[: depth - (node.level - 1)])
                rest = base + (node.module.split(".") if node.module else [])
            if rest:
                found.add(rest[0])
            else:  # from tproxy_nb import x, y  /  from .. import x: a module, or a name of __init__
                found.update(a.name if _is_module(a.name) else "__init__" for a in node.names)
    return found


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_known_layer():
    unknown = {layer_of(p) for p in MODULES} - set(ALLOWED) - BASE - {"cli", "__main__"}
    assert not unknown, f"modules outside the layers: {unknown}; add them to ALLOWED with their rules"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_only(path):
    layer = layer_of(path)
    imported = package_imports(path) - {layer}
    assert "cli" not in imported or layer == "__main__", f"{path.name} imports the CLI"
    if layer in ALLOWED:
        wrong = imported - ALLOWED[layer]
        assert not wrong, (
            f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}; allowed: {sorted(ALLOWED[layer])}"
        )
    elif layer in BASE:
        assert imported <= {"errors"}, (
            f"{path.name} is a base module and may import only errors, not {sorted(imported)}"
        )


def test_only_remote_imports_paramiko():
    users = [p for p in MODULES if "paramiko" in {n.split(".")[0] for n in _third_party(p)}]
    # host.py (connections), keys.py (agent, key files), sshconfig.py (paramiko's ssh_config parser).
    assert users and all(layer_of(p) == "remote" for p in users), [str(p.relative_to(PACKAGE)) for p in users]


def _third_party(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_rendering_and_parsing_load_neither_pandas_nor_paramiko():
    # Rendering a config must work where only pyyaml is installed; the markers likewise.
    code = (
        "import sys; import tproxy_nb.render.envoy, tproxy_nb.render.firewall, tproxy_nb.render.certs, "
        "tproxy_nb.render.iptables_save, tproxy_nb.marks; "
        "print(sorted(m for m in ('pandas', 'paramiko', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_checker_sees_a_wrong_import(tmp_path):
    # The rule itself can fail: a render module importing remote is caught.
    bad = PACKAGE / "render" / "_layer_probe.py"
    bad.write_text("from ..remote.host import Host\n")
    try:
        assert package_imports(bad) == {"remote"}
        assert "remote" not in ALLOWED[layer_of(bad)]
    finally:
        bad.unlink()
