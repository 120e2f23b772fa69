"""Progress bars: a tqdm widget in a notebook, text in a terminal, nothing when progress is off.

``tqdm.notebook`` ignores ``TQDM_DISABLE`` (it forces ``disable=False``); this honours it, so a
headless report run (``tproxy-nb run`` sets it for its kernels) stores no bar frozen at 0 %.

Example::

    with bar(total=4, desc="curl", unit="req") as b:
        b.update(1)
"""

from __future__ import annotations

import os


def enabled() -> bool:
    """False when the environment turns progress bars off (``TQDM_DISABLE`` set and not 0)."""
    return os.environ.get("TQDM_DISABLE", "") in ("", "0")


def bar(total: float, desc: str, unit: str = "it", disable: bool = False, **kw):
    """A tqdm bar (``tqdm.auto``), off when ``disable`` or :func:`enabled` is False; a context manager.

    total, desc, unit: as for tqdm. kw: more tqdm options (``unit_scale``...).
    """
    from tqdm.auto import tqdm

    if disable or not enabled():
        from tqdm import tqdm as plain

        return plain(total=total, desc=desc, unit=unit, disable=True, **kw)
    return tqdm(total=total, desc=desc, unit=unit, leave=False, **kw)
