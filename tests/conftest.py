"""Shared fixtures: one lab per test session, a Host connected to it, default settings.

Tests that touch a host are marked ``lab``; they need root and network namespaces.
The lab is brought down when the session ends, even when tests fail. Tests marked ``destructive``
(they break or remove the lab) get their own (``fresh_lab``) and run after all the others.
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# pytester runs a small pytest session inside a test (test_destructive_order.py checks the ordering hook with it).
pytest_plugins = ["pytester"]


def _lab_possible() -> str | None:
    if sys.platform != "linux":
        return "the lab needs Linux"
    if os.geteuid() != 0:
        return "the lab needs root"
    return None


def pytest_collection_modifyitems(config, items):
    why = _lab_possible()
    if why:
        for item in items:
            if "lab" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=why))
    # Tests that take the lab down run after every test that shares it, whatever their file names.
    items.sort(key=lambda item: item.get_closest_marker("destructive") is not None)


@contextmanager
def _new_lab():
    """A lab built from nothing (whatever an earlier, killed run left is gone), down afterwards whatever happens."""
    from tproxy_nb import lab

    lab.down()
    info = lab.up()
    try:
        yield info
    finally:
        lab.down()


@pytest.fixture(scope="session")
def lab_info():
    """The running lab (up once per session; down at the end, whatever happened)."""
    with _new_lab() as info:
        yield info


@pytest.fixture
def fresh_lab(request):
    """A lab of the test's own, for a test marked ``destructive`` (it may break it or take it down).

    Destructive tests run after all others, so the session's lab (``lab_info``, ``host``) is not used again.
    """
    if request.node.get_closest_marker("destructive") is None:
        pytest.fail("fresh_lab replaces the session's lab: mark the test @pytest.mark.destructive")
    with _new_lab() as info:
        yield info


@pytest.fixture(scope="session")
def host(lab_info):
    """A Host connected to the lab's host namespace under strict host-key checking."""
    h = lab_info.host_obj()
    yield h
    h.close()


@pytest.fixture(scope="session")
def settings():
    from tproxy_nb.settings import Settings

    return Settings()


@pytest.fixture(scope="module")
def chain(host, settings):
    """Provision + rules + Envoys on the lab, once per test module; everything removed afterwards, even on failure."""
    from tproxy_nb.steps import chain as egress

    try:
        egress.up(host, settings, guard_seconds=None)
        yield settings
    finally:
        egress.down(host, settings)


@pytest.fixture
def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
