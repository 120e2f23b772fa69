"""The README's two commands do what it says: CI runs `make test`; `make -n` shows what each installs and runs."""

import os
import re
import shlex
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _dry_run(target: str) -> list[str]:
    """The shell commands ``make TARGET`` would run from scratch (``-B``: as if nothing were installed)."""
    # Run as a user would, even when this test itself runs under `make test`: no inherited make state.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    p = subprocess.run(
        ["make", "-n", "-B", "--no-print-directory", target],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    return [line.strip() for line in p.stdout.replace("\\\n", " ").splitlines() if line.strip()]


def _apt_packages(commands: list[str]) -> list[str]:
    """The Debian packages the recipe checks for (``for p in ...; do dpkg -s``) and installs when missing."""
    loops = [re.search(r"for p in ([^;]*); do dpkg -s", c) for c in commands]
    found = [m[1].split() for m in loops if m]
    assert len(found) == 1, commands
    assert any("apt-get install" in c for c in commands)
    return found[0]


def _readme_packages() -> tuple[list[str], list[str]]:
    m = re.search(r"\(`([^`]+)`; for\s+`make test` also `([^`]+)`", README)
    assert m, "the README no longer lists the Debian packages the two commands install"
    return m[1].split(), m[2].split()


def test_readme_names_exactly_the_two_commands():
    block = re.search(r"## Two commands\n\n```\n(.*?)```", README, re.S)[1]
    assert [line.split("#")[0].strip() for line in block.splitlines() if line.strip()] == ["make run", "make test"]


def test_ci_runs_make_test_from_the_checkout(tmp_path):
    # A stand-in for make on PATH records how .ci/run calls it (the real `make test` is this whole suite).
    record = tmp_path / "called"
    stub = tmp_path / "make"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$PWD" "$@" > {shlex.quote(str(record))}\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    p = subprocess.run(["bash", str(REPO / ".ci" / "run")], cwd=tmp_path, env=env, capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert record.read_text().splitlines() == [str(REPO), "test"]


def test_make_run_installs_then_runs_the_tutorial():
    cmds = _dry_run("run")
    assert _apt_packages(cmds) == _readme_packages()[0]
    assert any("python3 -m venv .venv" in c for c in cmds)
    assert any(re.search(r"\.venv/bin/python -m pip install .*-e '\.\[test\]'", c) for c in cmds)
    assert cmds[-1] == ".venv/bin/tproxy-nb run"


def test_make_test_installs_lints_type_checks_then_runs_pytest():
    cmds = _dry_run("test")
    base, extra = _readme_packages()
    assert _apt_packages(cmds) == base + extra
    assert any("python3 -m venv .venv" in c for c in cmds)
    tail = cmds[-4:]
    assert tail == [
        ".venv/bin/ruff check .",
        ".venv/bin/ruff format --check .",
        ".venv/bin/mypy",
        ".venv/bin/python -m pytest -p no:cacheprovider",
    ]


def test_readme_settings_block_is_the_defaults(tmp_path):
    from tproxy_nb.settings import Settings, load_settings

    block = re.search(r"## Settings\n.*?```yaml\n(.*?)```", README, re.S)[1]
    f = tmp_path / "readme.yaml"
    f.write_text(block)
    assert load_settings(f).to_dict() == Settings().to_dict()
