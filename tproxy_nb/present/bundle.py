"""A run's data bundle (``build/report/data/``): what the report says, as files anyone can re-read.

``record`` writes it from a live host (notebook 4 calls it once, before its clean-up); ``load``
reads it back with no host at all, which is what a ``replay:DIR`` target analyses. The layout::

    manifest.json            sha256 and size of every other file
    run.json                 target, time, tproxy_nb version, git commit, the command to reproduce
    settings.yaml            the settings the run used
    facts.json               the target: OS, kernel, iptables backend, curl, OpenSSL, Envoy build
    curl/results.json|csv    one row per request as the service user, curl's own %{json} fields included
    curl/as_envoy.json|csv   the same requests as the envoy user (they bypass the chain)
    logs/<envoy>.debug.log   each Envoy's debug log of the run; logs/<envoy>.access.log its access log
    configs/<envoy>.yaml     the configs the Envoys ran
    iptables/nat.rules       iptables-save of our chain and its OUTPUT hook, with counters; nat6.rules the
                             same from ip6tables-save (where the host has IPv6); with interception: tproxy
                             also mangle.rules and mangle6.rules (ENVOY_MARK, ENVOY_TPROXY and their hooks)
    stats/<envoy>.before.txt and .after.txt   each Envoy's admin /stats around the requests

No file may hold a private key: writing one fails and removes the file.

Example::

    data = record("build/report/data", host, settings, results=df, as_envoy=direct, logs=texts,
                  stats_before=before)
    rec = load("build/report/data")
    rec.results.groupby("case").outcome.first()
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from ..analysis import curl
from ..analysis import trace as tracing
from ..errors import TproxyError
from ..render import envoy
from ..render.firewall import CHAIN, OUR_CHAINS, tool
from ..settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
#: Where a run's bundle goes unless told otherwise (``tproxy-nb run`` sets it to ``<out>/data``).
DATA_ENV = "TPROXY_NB_DATA"
MANIFEST = "manifest.json"
#: A PEM private-key block with real base64 content (a mention of the marker is not one).
KEY_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\s*[A-Za-z0-9+/=]{40,}")
#: Response bodies are cut to this many characters: they show who answered, not the page.
BODY_CHARS = 200


class BundleError(TproxyError):
    """A data bundle that cannot be written or read (missing, altered, or holding a key)."""


def default_dir() -> Path:
    """Where notebooks write and read the bundle: ``$TPROXY_NB_DATA``, else ``build/report/data`` of the checkout.

    Example: ``default_dir()`` -> ``PosixPath('/home/me/tproxy-notebooks/build/report/data')``.
    """
    return Path(os.environ.get(DATA_ENV) or REPO / "build" / "report" / "data")


# --------------------------------------------------------------------------- pure helpers


def private_keys(text: str) -> bool:
    """Whether ``text`` holds a PEM private-key block.

    Example: ``private_keys("no key here")`` -> ``False``.
    """
    return bool(KEY_BLOCK.search(text))


def our_chain(save: str, chains: tuple[str, ...] = (CHAIN,)) -> str:
    """The lines of ``iptables-save`` output that belong to us: table headers, our chains, their hooks.

    chains: the chains of ours to keep (ENVOY_EGRESS; for the mangle table ENVOY_MARK and ENVOY_TPROXY).

    Example: ``our_chain("*nat\\n:OUTPUT ACCEPT [0:0]\\n-A OUTPUT -j DOCKER\\n-A OUTPUT -j ENVOY_EGRESS\\nCOMMIT")``
    -> ``"*nat\\n-A OUTPUT -j ENVOY_EGRESS\\nCOMMIT\\n"``.
    """
    keep = []
    for line in save.splitlines():
        words = line.split()
        if line.startswith(("*", "COMMIT")) or any(line.startswith(f":{c} ") for c in chains):
            keep.append(line)
        elif set(chains) & set(words) and ("-A" in words or "-I" in words):
            keep.append(line)
    return "\n".join(keep) + "\n"


def results_records(df: pd.DataFrame) -> list[dict]:
    """curl results as JSON-ready records (every column, bodies cut to :data:`BODY_CHARS`).

    Example: ``results_records(df)[0]["http_code"]`` -> ``200``.
    """
    out = df.copy()
    if "body" in out:
        out["body"] = out["body"].map(lambda b: b[:BODY_CHARS] if isinstance(b, str) else b)
    return json.loads(out.to_json(orient="records"))


def results_frame(records: list[dict]) -> pd.DataFrame:
    """Records written by :func:`results_records` back as the DataFrame ``check.run_cases`` returns."""
    return curl.to_frame(records)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_commit(repo: Path = REPO) -> str:
    """The checkout's commit (with ``-dirty`` when it has changes), or ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


# --------------------------------------------------------------------------- writing


def write_file(data_dir: str | Path, rel: str, content: str | bytes) -> Path:
    """Write one file of the bundle; refuse (and leave nothing) when it holds a private key.

    Example: ``write_file(d, "logs/igw.debug.log", text)``.
    """
    text = content if isinstance(content, str) else content.decode("utf-8", "replace")
    if private_keys(text):
        raise BundleError(
            f"{rel} would hold a private key; it was not written to the bundle {data_dir}. "
            "Find what printed the key and keep it out of the logs and configs."
        )
    path = Path(data_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def seal(data_dir: str | Path) -> dict:
    """Write ``manifest.json``: path, size and sha256 of every other file; refuse if any holds a key.

    Example: ``seal("build/report/data")["files"][0]`` -> ``{"path": "configs/igw.yaml", "bytes": ..., "sha256": ...}``.
    """
    root = Path(data_dir)
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        data = path.read_bytes()
        rel = path.relative_to(root).as_posix()
        if private_keys(data.decode("utf-8", "replace")):
            path.unlink()
            raise BundleError(f"{rel} in the bundle {root} held a private key; it was removed. Nothing was sealed.")
        files.append({"path": rel, "bytes": len(data), "sha256": sha256(data)})
    manifest = {"format": 1, "sealed": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def target_facts(host, settings: Settings) -> dict[str, str]:
    """The target's facts the report names: OS, kernel, iptables, curl, OpenSSL, Envoy version and build.

    One read-only command each; ``?`` where the host did not say.
    """

    def out(cmd: str) -> str:
        return host.run(cmd, check=False, timeout=60).stdout.strip() or "?"

    envoy_line = host.run([settings.paths.envoy, "--version"], check=False, timeout=60)
    build = next((line.strip() for line in envoy_line.stdout.splitlines() if "version:" in line), "?")
    return {
        "target": f"{host.user}@{host.hostname}:{host.port}",
        "os": out('. /etc/os-release && echo "$PRETTY_NAME"'),
        "kernel": out("uname -sr"),
        "iptables": out("iptables -V 2>&1"),
        "curl": out("curl --version | head -n 1"),
        "openssl": out("openssl version 2>&1"),
        "envoy": envoy.parse_version(build) if build != "?" else "?",
        "envoy build": build.split("version:", 1)[-1].strip(),
    }


def admin_stats(host, settings: Settings) -> dict[str, str]:
    """Each Envoy's whole admin ``/stats`` page now (for a before/after pair in the bundle)."""
    from ..steps import envoy_proc

    return {name: envoy_proc.admin(host, settings, name, "/stats") for name in envoy.NAMES}


def record(
    data_dir: str | Path,
    host,
    settings: Settings,
    *,
    results: pd.DataFrame,
    logs: dict[str, dict[str, str]],
    stats_before: dict[str, str],
    as_envoy: pd.DataFrame | None = None,
) -> Path:
    """Write the bundle of this run to ``data_dir`` (emptied first) and seal it; return the directory.

    results: the service user's requests (``check.run_cases``). as_envoy: the envoy user's.
    logs: ``{envoy: {"debug": text, "access": text}}`` of the run. stats_before: :func:`admin_stats`
    before the requests; the "after" page, configs, rules and facts are read here.
    """
    from ..steps import firewall
    from ..steps.guard import run_iptables

    root = Path(data_dir)
    if root.exists():
        for old in sorted(root.rglob("*"), reverse=True):
            old.unlink() if old.is_file() else old.rmdir()
    root.mkdir(parents=True, exist_ok=True)
    frames = {"results": results, **({"as_envoy": as_envoy} if as_envoy is not None else {})}
    for name, df in frames.items():
        records = results_records(df)
        write_file(root, f"curl/{name}.json", json.dumps(records, indent=1))
        write_file(root, f"curl/{name}.csv", pd.DataFrame(records).to_csv(index=False))
    for name, texts in logs.items():
        write_file(root, f"logs/{name}.debug.log", texts.get("debug", ""))
        write_file(root, f"logs/{name}.access.log", texts.get("access", ""))
    after = admin_stats(host, settings)
    for name in envoy.NAMES:
        write_file(root, f"configs/{name}.yaml", str(host.get(envoy.config_path(settings, name), sudo=True)))
        write_file(root, f"stats/{name}.before.txt", stats_before.get(name, ""))
        write_file(root, f"stats/{name}.after.txt", after[name])
    tables = ("nat", "mangle") if settings.interception == "tproxy" else ("nat",)
    for family in firewall.shown_families(host):
        for table in tables:
            save = run_iptables(host, [tool(family, "-save"), "-t", table, "-c"]).stdout
            six = "6" if family == "ipv6" else ""
            write_file(root, f"iptables/{table}{six}.rules", our_chain(save, OUR_CHAINS[table]))
    facts = {**target_facts(host, settings), "iptables backend": firewall.backend(host)}
    write_file(root, "facts.json", json.dumps(facts, indent=1))
    write_file(root, "settings.yaml", yaml.safe_dump(settings.to_dict(), sort_keys=False))
    seal(root)
    return root


# --------------------------------------------------------------------------- reading


@dataclass
class Recording:
    """A bundle read back: what the run did, with no host behind it."""

    path: Path
    manifest: dict
    results: pd.DataFrame
    as_envoy: pd.DataFrame | None
    texts: dict[str, dict[str, str]]
    facts: dict[str, str]
    run: dict[str, str]
    settings: Settings
    _parsed: dict | None = field(default=None, repr=False)

    def parsed(self) -> dict[str, dict]:
        """The logs parsed (once): ``{envoy: {"debug": df, "access": df}}`` as :func:`trace.parse_all` gives."""
        if self._parsed is None:
            self._parsed = tracing.parse_all(self.texts)
        return self._parsed

    def stats(self, name: str, when: str = "after") -> str:
        """The admin ``/stats`` page of ``name`` recorded ``before`` or ``after`` the requests."""
        return (self.path / f"stats/{name}.{when}.txt").read_text()

    def files(self) -> pd.DataFrame:
        """The manifest as a table: path, bytes, sha256 (checked when the bundle was loaded)."""
        return pd.DataFrame(self.manifest["files"], columns=["path", "bytes", "sha256"])


def verify(data_dir: str | Path) -> dict:
    """Check every file against ``manifest.json``; return the manifest or raise :class:`BundleError`."""
    root = Path(data_dir)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(
            f"{root} is not a data bundle: it has no {MANIFEST}. A bundle is the data/ directory that "
            "`tproxy-nb run` writes beside the report (build/report/data)."
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"Cannot read {root / MANIFEST}: {e}.") from None
    problems = []
    for entry in manifest.get("files", []):
        path = root / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']} is missing")
        elif sha256(path.read_bytes()) != entry["sha256"]:
            problems.append(f"{entry['path']} changed since it was recorded")
    if problems:
        raise BundleError(f"The bundle {root} does not match its manifest: {'; '.join(problems)}.")
    return manifest


def load(data_dir: str | Path) -> Recording:
    """Read a bundle, verified against its manifest (no host, no root).

    Example: ``load("build/report/data").results["outcome"].tolist()[:4]``
    -> ``["allowed", "denied", "allowed", "reset"]``.
    """
    root = Path(data_dir).expanduser().resolve()
    manifest = verify(root)

    def read(rel: str, default: str = "") -> str:
        path = root / rel
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else default

    def frame(rel: str) -> pd.DataFrame | None:
        text = read(rel)
        return results_frame(json.loads(text)) if text else None

    results = frame("curl/results.json")
    if results is None:
        raise BundleError(f"The bundle {root} has no curl/results.json: it recorded no requests.")
    names = sorted({p.name.split(".")[0] for p in (root / "logs").glob("*.log")}, key=_envoy_order)
    texts = {n: {"debug": read(f"logs/{n}.debug.log"), "access": read(f"logs/{n}.access.log")} for n in names}
    settings = load_settings(root / "settings.yaml") if (root / "settings.yaml").is_file() else Settings()
    return Recording(
        path=root,
        manifest=manifest,
        results=results,
        as_envoy=frame("curl/as_envoy.json"),
        texts=texts,
        facts=json.loads(read("facts.json", "{}")),
        run=json.loads(read("run.json", "{}")),
        settings=settings,
    )


def _envoy_order(name: str) -> tuple[int, str]:
    return (envoy.NAMES.index(name) if name in envoy.NAMES else len(envoy.NAMES), name)
