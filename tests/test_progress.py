"""Progress bars are on by default and off when TQDM_DISABLE says so (headless report runs)."""

from tproxy_nb import progress


def test_bars_follow_tqdm_disable(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress.enabled()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not progress.enabled()
    with progress.bar(total=3, desc="x") as b:
        assert b.disable
        b.update(3)


def test_disable_argument_wins(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with progress.bar(total=1, desc="x", disable=True) as b:
        assert b.disable
