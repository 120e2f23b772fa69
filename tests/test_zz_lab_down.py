"""Runs last: `lab down` leaves nothing behind, and a second `down` succeeds on nothing."""

import pytest

from tproxy_nb import lab

pytestmark = pytest.mark.lab


def test_down_leaves_nothing_and_is_idempotent(lab_info):
    lab.down()
    assert lab.leftovers() == []
    assert lab.down() == []
