"""Which keys are offered, in which order, and what a locked key without a passphrase says (no agent, no socket)."""

from dataclasses import replace
from pathlib import Path

import pytest

from tproxy_nb.errors import ConnectError
from tproxy_nb.remote.keys import KeySources, Passphrase
from tproxy_nb.remote.sshconfig import resolve
from tproxy_nb.render.pki import ssh_keypair, write_private


def locked_key(path: Path, passphrase: bytes) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(passphrase),
    )
    write_private(path, key)
    return path


def test_open_keys_come_before_locked_ones_and_a_passphrase_opens_them(tmp_path):
    locked = locked_key(tmp_path / "locked", b"pw")
    write_private(tmp_path / "open", ssh_keypair("open")[0])
    r = replace(resolve("h", config=None), identity_files=(locked, tmp_path / "open"))
    keys = KeySources(r, Passphrase("pw", "test"), agent=[])
    got = list(keys.get_sources())
    assert [str(s.pkey.get_name()) for s in got] == ["ssh-ed25519", "ssh-ed25519"]
    assert keys.offered == [str(tmp_path / "open"), str(locked)]


def test_a_locked_key_without_a_passphrase_fails_before_connecting(tmp_path):
    locked = locked_key(tmp_path / "k", b"pw")
    keys = KeySources(resolve("h", config=None, key_file=locked), Passphrase(prompt=False), agent=[])
    with pytest.raises(ConnectError) as e:
        keys.precheck()
    text = str(e.value)
    assert str(locked) in text and "--passphrase-env" in text and "ssh-add" in text
    assert "\n" not in text  # one paragraph


def test_a_wrong_passphrase_is_named_and_nothing_offered(tmp_path):
    locked = locked_key(tmp_path / "k", b"pw")
    keys = KeySources(resolve("h", config=None, key_file=locked), Passphrase("nope", "the variable X"), agent=[])
    keys.precheck()
    assert list(keys.get_sources()) == []
    assert "the variable X does not open" in keys.problems[0]


def test_no_key_anywhere_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    r = resolve("h", config=None, key_file=tmp_path / "missing")
    with pytest.raises(ConnectError, match="No private key to log in to"):
        KeySources(r, Passphrase(), agent=[]).precheck()
