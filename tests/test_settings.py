"""Settings: defaults, YAML loading, and errors that name file, key (and line) before any remote call."""

import pytest

from tproxy_nb.errors import SettingsError
from tproxy_nb.settings import Settings, load_settings


def test_defaults_match_the_write_up():
    s = load_settings()
    assert (s.ports.http_redirect, s.ports.tls_redirect) == (12003, 12000)
    assert s.allowed_hosts == ("www.google.com",)
    assert s.envoy.uid != 0 and s.envoy.gid != 0
    assert s.paths.envoy == "/opt/tproxy-nb/bin/envoy"


def test_yaml_overrides_only_what_it_names(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("envoy: {uid: 3001}\nallowed_hosts: [www.google.com, www.lyft.com]\n")
    s = load_settings(f)
    assert s.envoy.uid == 3001 and s.envoy.user == "tpx-envoy"
    assert s.allowed_hosts == ("www.google.com", "www.lyft.com")


def test_malformed_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("envoy:\n  uid: 3001\n  user: [unclosed\n")
    with pytest.raises(SettingsError, match=r"bad\.yaml, line \d+") as e:
        load_settings(f)
    assert "nothing was changed" in str(e.value)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "text,key",
    [
        ("envoy: {user: 'x; rm -rf /'}", "envoy.user"),
        ("envoy: {uid: 0}", "envoy.uid"),
        ("envoy: {uid: '2101'}", "envoy.uid"),
        ("envoy: {uid: true}", "envoy.uid"),
        ("ports: {tls_redirect: 70000}", "ports.tls_redirect"),
        ("ports: {tls_redirect: 12003}", "ports.tls_redirect"),
        ("allowed_hosts: ['www.google.com; reboot']", "allowed_hosts"),
        ("allowed_hosts: www.google.com", "allowed_hosts"),
        ("paths: {root: '/opt/x y'}", "paths.root"),
        ("paths: {root: /etc}", "paths.root"),
        ("envoy_install: curl", "envoy_install"),
        ("service: {uid: 2101}", "service.user"),
        ("colour: blue", "colour"),
        ("ports: {igww: 1}", "ports.igww"),
        ("tls_deny: drop", "tls_deny"),
        ("tunnel: h2", "tunnel"),
        ("ports: {explicit_proxy: 12000}", "ports.explicit_proxy"),
        ("bypass: {root: 'yes'}", "bypass.root"),
        ("bypass: {link_local: 0}", "bypass.link_local"),
        ("bypass: {metadata: true}", "bypass.metadata"),
        ("bypass: true", "bypass"),
    ],
)
def test_bad_values_are_settings_errors_naming_the_key(tmp_path, text, key):
    f = tmp_path / "s.yaml"
    f.write_text(text + "\n")
    with pytest.raises(SettingsError) as e:
        load_settings(f)
    assert key in str(e.value) and str(f) in str(e.value)


def test_bypass_defaults_are_safe_on_ec2_and_can_be_turned_off(tmp_path):
    s = load_settings()
    assert (s.bypass.root, s.bypass.link_local) == (True, True)
    f = tmp_path / "s.yaml"
    f.write_text("bypass: {root: false}\n")
    off = load_settings(f)
    assert (off.bypass.root, off.bypass.link_local) == (False, True)
    assert off.to_dict()["bypass"] == {"root": False, "link_local": True}
    with pytest.raises(SettingsError, match="must be true or false"):
        load_settings(None, bypass={"root": "false"})


def test_replace_revalidates():
    with pytest.raises(SettingsError, match="allowed_hosts"):
        Settings().replace(allowed_hosts=("bad host",))
    assert Settings().replace(allowed_hosts=("www.lyft.com",)).allowed_hosts == ("www.lyft.com",)


@pytest.mark.parametrize(
    "key,default,other,bad,modes",
    [
        ("tls_deny", "reset", "deny-page", "rst", "reset, read-first, sni, deny-page"),
        ("tunnel", "http1", "http2", "HTTP/2", "http1, http2"),
    ],
)
def test_modes_default_to_the_write_up_and_a_bad_one_names_them_all(tmp_path, key, default, other, bad, modes):
    assert getattr(load_settings(), key) == default and load_settings().ports.explicit_proxy == 12008
    f = tmp_path / "s.yaml"
    f.write_text(f"{key}: {other}\n")
    assert getattr(load_settings(f), key) == other
    f.write_text(f"{key}: {bad}\n")
    with pytest.raises(SettingsError, match=f"choose one of {modes}"):
        load_settings(f)
