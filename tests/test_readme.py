"""The README's two commands are what CI runs and what the Makefile defines."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Two commands\n\n```\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == ["make test"]


def test_makefile_defines_both_targets_and_each_installs_what_it_needs():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^run: system \$\(STAMP\)$", makefile, re.M)
    assert re.search(r"^test: system-test \$\(STAMP\)$", makefile, re.M)
    assert "apt-get update" in makefile and "python3 -m venv" in makefile
