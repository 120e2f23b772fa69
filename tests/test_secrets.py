"""Secrets: no private key in the tree git tracks; keys are made 0600; CA keys never go to a host."""

import re
import stat
import subprocess
from pathlib import Path

import pytest

from tproxy_nb.render import certs
from tproxy_nb.settings import Settings

REPO = Path(__file__).resolve().parent.parent
#: A PEM private-key block with real base64 content (not a mention of the marker in code).
KEY_BLOCK = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\s*[A-Za-z0-9+/=]{40,}")


def test_no_tracked_file_holds_a_private_key():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    offenders = []
    for name in filter(None, files):
        path = REPO / name.decode()
        if path.is_file() and KEY_BLOCK.search(path.read_bytes()):
            offenders.append(name.decode())
    assert offenders == []


def test_generated_keys_are_private_and_ignored_by_git(tmp_path):
    out = certs.generate(tmp_path, Settings())
    keys = [Path(v["key"]) for v in out.values() if v.get("key")]
    assert keys
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    ignored = subprocess.run(
        ["git", "check-ignore", "certs/sidecar.key", "certs/client-ca.key"], cwd=REPO, capture_output=True, text=True
    )
    assert ignored.stdout.split() == ["certs/sidecar.key", "certs/client-ca.key"]


def test_ca_keys_are_never_in_the_upload_set():
    uploaded = {name for name, _mode in certs.UPLOAD}
    assert {"client-ca.pem", "server-ca.pem", "sidecar.key"} <= uploaded
    assert not uploaded & {"client-ca.key", "server-ca.key"}
    assert all(mode == 0o400 for name, mode in certs.UPLOAD if name.endswith(".key"))


def test_the_egress_ca_key_stays_here_only_deny_page_leaves_go_up():
    from tproxy_nb.settings import Settings

    uploaded = {name for name, _mode in certs.upload_files(Settings())}
    assert "deny-www.lyft.com.key" in uploaded and "deny-www.lyft.com.pem" in uploaded
    assert not any(name.startswith("egress-ca") for name in uploaded)


def test_a_private_key_never_enters_a_data_bundle(tmp_path):
    """The report's data bundle is scanned like the tree: a key is refused on writing and on sealing."""
    from test_bundle import make_bundle

    from tproxy_nb.present import bundle

    data = make_bundle(tmp_path / "data")
    # Built from parts, so this file holds no key block itself.
    key = "-----BEGIN OPENSSH " + "PRIVATE KEY-----\n" + "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ" * 2 + "\n"
    with pytest.raises(bundle.BundleError, match="private key"):
        bundle.write_file(data, "logs/leak.log", key)
    assert not (data / "logs" / "leak.log").exists()
    (data / "configs" / "sneaked.yaml").write_text(key)
    with pytest.raises(bundle.BundleError, match="sneaked.yaml"):
        bundle.seal(data)
    assert not (data / "configs" / "sneaked.yaml").exists()
