"""The Envoy binary on any target: the platform fact, the install modes and their errors (pure, fake host)."""

from __future__ import annotations

import pytest

from tproxy_nb.errors import StepError
from tproxy_nb.steps import envoy_binary, facts

#: What facts.PLATFORM_SCRIPT prints on real hosts.
DEBIAN12 = "Linux\nx86_64\nglibc 2.36\n"
UBUNTU_ARM = "Linux\naarch64\nglibc 2.35\n"
ALPINE = "Linux\nx86_64\nmusl libc (x86_64)\n"  # getconf fails, ldd --version names musl
OLD_LDD = "Linux\nx86_64\nldd (Ubuntu GLIBC 2.27-3ubuntu1.6) 2.27\n"  # getconf missing: ldd's first line
DARWIN = "Darwin\narm64\n\n"


@pytest.mark.parametrize(
    "text, os_, arch, libc, glibc",
    [
        (DEBIAN12, "Linux", "x86_64", "glibc", (2, 36)),
        (UBUNTU_ARM, "Linux", "aarch64", "glibc", (2, 35)),
        (ALPINE, "Linux", "x86_64", "musl", None),
        (OLD_LDD, "Linux", "x86_64", "glibc", (2, 27)),
        (DARWIN, "Darwin", "arm64", "unknown", None),
        ("", "unknown", "unknown", "unknown", None),
    ],
)
def test_parse_platform(text, os_, arch, libc, glibc):
    p = facts.parse_platform(text)
    assert (p.os, p.arch, p.libc, p.glibc) == (os_, arch, libc, glibc)


def test_platform_reads_this_machine_through_the_real_script():
    import subprocess

    out = subprocess.run(["sh", "-c", facts.PLATFORM_SCRIPT], capture_output=True, text=True, check=True).stdout
    p = facts.parse_platform(out)
    assert p.os == "Linux" and p.libc == "glibc" and p.glibc >= (2, 31), out
    assert str(p).startswith("Linux x86_64, glibc 2.")


def test_glibc_linux_passes_musl_and_other_kernels_are_refused():
    envoy_binary.require_linux_glibc(facts.parse_platform(UBUNTU_ARM), "graviton")
    with pytest.raises(StepError, match=r"(?s)alpine1 is Linux x86_64, musl.*need glibc.*Nothing was changed"):
        envoy_binary.require_linux_glibc(facts.parse_platform(ALPINE), "alpine1")
    with pytest.raises(StepError, match="needs a Linux host"):
        envoy_binary.require_linux_glibc(facts.parse_platform(DARWIN), "mac")
