"""Tests marked ``destructive`` run after every other test, whatever the file names say."""

from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")


def test_destructive_tests_run_last_in_any_file_order(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    destructive: breaks the lab\n    lab: needs the lab\n")
    pytester.makepyfile(
        test_a="""
import pytest

@pytest.mark.destructive
def test_takes_the_lab_down():
    pass

def test_uses_the_lab():
    pass
""",
        test_b="def test_also_uses_the_lab():\n    pass\n",
    )
    calls = pytester.inline_run("-p", "no:cacheprovider").getreports("pytest_runtest_logreport")
    ran = [r.nodeid for r in calls if r.when == "call"]
    assert ran == [
        "test_a.py::test_uses_the_lab",
        "test_b.py::test_also_uses_the_lab",
        "test_a.py::test_takes_the_lab_down",
    ]
