"""Pure parts of the lab: the rootfs host's mirror from apt sources, the one sshd config shape, /etc/hosts."""

from __future__ import annotations

from tproxy_nb.lab import core, rootfs, sshd
from tproxy_nb.render import pki

DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_mirror_is_the_first_source_serving_the_suite_in_either_format():
    assert rootfs.mirror_from_sources([DEB822]) == "http://mirror.example/debian"
    one_line = (
        "# deb http://old.example/debian bookworm main\ndeb [arch=amd64] https://m.example/debian/ bookworm main\n"
    )
    assert rootfs.mirror_from_sources([one_line]) == "https://m.example/debian"
    # Another suite, a source package line or another distribution's suite does not count.
    other = "deb http://x.example/debian bullseye main\ndeb-src http://y.example/debian bookworm main\n"
    assert rootfs.mirror_from_sources([other, "Types: deb-src\nURIs: http://z/\nSuites: bookworm\n"]) is None
    assert rootfs.mirror_from_sources([other, DEB822]) == "http://mirror.example/debian"


def test_every_lab_sshd_is_key_only_and_extra_options_come_after_the_shared_ones():
    text = sshd.config_text("198.18.4.2", 22, "/etc/ssh/k", AllowTcpForwarding="yes")
    lines = text.splitlines()
    assert lines[:2] == ["ListenAddress 198.18.4.2:22", "HostKey /etc/ssh/k"]
    assert "PasswordAuthentication no" in lines and "UsePAM no" in lines and "PidFile" not in text
    assert lines[-1] == "AllowTcpForwarding yes"


def test_fingerprint_and_known_hosts_line_name_the_same_key():
    _private, public = pki.ssh_keypair("c")
    assert sshd.known_hosts_line("198.18.4.2", public) == "198.18.4.2 " + " ".join(public.split()[:2])
    assert sshd.fingerprint(public).startswith("SHA256:") and "=" not in sshd.fingerprint(public)


def test_a_lab_host_resolves_its_own_name_and_both_families_of_each_site():
    lines = core.hosts_text("tpx-rootfs").splitlines()
    assert "127.0.1.1\ttpx-rootfs" in lines
    for name in core.SITES:
        assert f"{core.SITES[name]}\t{name}" in lines and f"{core.SITES6[name]}\t{name}" in lines
