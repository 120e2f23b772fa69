"""Pure tests of the Envoy config renderer and the certificate generator (no host, no binary)."""

from __future__ import annotations

import os
import re
import stat

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID
from fakes import FakeHost

from tproxy_nb.errors import StepError
from tproxy_nb.render import certs, envoy, pki
from tproxy_nb.settings import Paths, Ports, Settings
from tproxy_nb.steps import accounts, facts, files


@pytest.fixture
def settings() -> Settings:
    return Settings()


def parsed(settings: Settings, name: str) -> dict:
    return yaml.safe_load(envoy.render(settings, name))


def listener(cfg: dict, name: str) -> dict:
    return next(lis for lis in cfg["static_resources"]["listeners"] if lis["name"] == name)


def cluster(cfg: dict, name: str) -> dict:
    return next(c for c in cfg["static_resources"]["clusters"] if c["name"] == name)


def first_filter(lis: dict) -> dict:
    return lis["filter_chains"][0]["filters"][0]["typed_config"]


def http_filter_names(hcm: dict) -> list[str]:
    return [f["name"] for f in hcm["http_filters"]]


def access_logs(node) -> list[dict]:
    """Every access_log entry anywhere in a parsed config."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "access_log":
                found.extend(v)
            else:
                found.extend(access_logs(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(access_logs(v))
    return found


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("name", envoy.NAMES)
def test_every_config_parses_and_is_fully_substituted(settings, name):
    text = envoy.render(settings, name)
    assert "${" not in text
    cfg = yaml.safe_load(text)
    assert cfg["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": envoy.admin_port(settings, name),
    }


def test_render_all_names(settings):
    assert set(envoy.render_all(settings)) == set(envoy.NAMES)


def test_sidecar_listeners_ports_and_listener_filters(settings):
    cfg = parsed(settings, "sidecar")
    http, tls = listener(cfg, "sidecar_http"), listener(cfg, "sidecar_tls")
    assert http["address"]["socket_address"]["port_value"] == settings.ports.http_redirect == 12003
    assert tls["address"]["socket_address"]["port_value"] == settings.ports.tls_redirect == 12000
    # ip6tables REDIRECTs IPv6 connections to [::1]: both listeners take them there on the same port, loopback only.
    for lst in (http, tls):
        assert lst["address"]["socket_address"]["address"] == "127.0.0.1"
        assert [a["address"]["socket_address"] for a in lst["additional_addresses"]] == [
            {"address": "::1", "port_value": lst["address"]["socket_address"]["port_value"]}
        ]
    assert [f["name"] for f in http["listener_filters"]] == ["envoy.filters.listener.original_dst"]
    # original_dst must run before tls_inspector: the port comes from the first, the SNI from the second.
    assert [f["name"] for f in tls["listener_filters"]] == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.tls_inspector",
    ]
    chain = tls["filter_chains"][0]
    assert chain["filter_chain_match"] == {"transport_protocol": "tls"}
    tcp = chain["filters"][0]["typed_config"]
    assert tcp["cluster"] == "igw"
    assert tcp["tunneling_config"]["hostname"] == "%REQUESTED_SERVER_NAME%:%DOWNSTREAM_LOCAL_PORT%"
    hcm = first_filter(http)
    assert hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == "igw_http"


def test_sidecar_clusters_use_mtls_and_check_gateway_names(settings):
    cfg = parsed(settings, "sidecar")
    d = settings.paths.certs
    for name, port in (("igw", settings.ports.igw), ("igw_http", settings.ports.igw_http)):
        c = cluster(cfg, name)
        ep = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert ep == {"address": "127.0.0.1", "port_value": port}
        tls = c["transport_socket"]["typed_config"]
        assert tls["@type"].endswith("UpstreamTlsContext")
        ctx = tls["common_tls_context"]
        assert ctx["tls_certificates"][0] == {
            "certificate_chain": {"filename": f"{d}/sidecar.pem"},
            "private_key": {"filename": f"{d}/sidecar.key"},
        }
        assert ctx["validation_context"]["trusted_ca"] == {"filename": f"{d}/server-ca.pem"}
        assert ctx["validation_context"]["match_typed_subject_alt_names"] == [
            {"san_type": "DNS", "matcher": {"exact": certs.GATEWAY_DNS[name]}}
        ]
        assert tls["sni"] == certs.GATEWAY_DNS[name]


@pytest.mark.parametrize("name", ["igw", "igw_http"])
def test_gateways_require_the_sidecar_client_cert(settings, name):
    cfg = parsed(settings, name)
    lis = listener(cfg, name)
    assert lis["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": getattr(settings.ports, name)}
    tls = lis["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("DownstreamTlsContext")
    assert tls["require_client_certificate"] is True
    vc = tls["common_tls_context"]["validation_context"]
    assert vc["trusted_ca"] == {"filename": f"{settings.paths.certs}/client-ca.pem"}
    assert vc["match_typed_subject_alt_names"] == [{"san_type": "URI", "matcher": {"exact": certs.SIDECAR_URI}}]
    assert tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"] == {
        "filename": f"{settings.paths.certs}/{name}.pem"
    }


@pytest.mark.parametrize("name", ["igw", "igw_http"])
def test_gateways_check_rbac_before_dynamic_forward_proxy(settings, name):
    hcm = first_filter(listener(parsed(settings, name), name))
    assert http_filter_names(hcm) == [
        "envoy.filters.http.rbac",
        "envoy.filters.http.dynamic_forward_proxy",
        "envoy.filters.http.router",
    ]
    rules = hcm["http_filters"][0]["typed_config"]["rules"]
    assert rules["action"] == "ALLOW"
    assert set(rules["policies"]) == {f"allow-{h}" for h in settings.allowed_hosts}
    dfp = cluster(parsed(settings, name), "dynamic_forward_proxy")
    assert dfp["cluster_type"]["name"] == "envoy.clusters.dynamic_forward_proxy"
    # Filter and cluster must share one DNS cache, or the cluster never sees the lookups.
    assert (
        dfp["cluster_type"]["typed_config"]["dns_cache_config"]
        == hcm["http_filters"][1]["typed_config"]["dns_cache_config"]
    )


def test_igw_terminates_connect(settings):
    hcm = first_filter(listener(parsed(settings, "igw"), "igw"))
    assert hcm["upgrade_configs"] == [{"upgrade_type": "CONNECT"}]
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["match"] == {"connect_matcher": {}}
    assert route["route"]["upgrade_configs"] == [{"upgrade_type": "CONNECT", "connect_config": {}}]


def test_igw_http_does_not_accept_connect(settings):
    hcm = first_filter(listener(parsed(settings, "igw_http"), "igw_http"))
    assert "upgrade_configs" not in hcm
    assert hcm["route_config"]["virtual_hosts"][0]["routes"][0]["match"] == {"prefix": "/"}


@pytest.mark.parametrize(
    "authority,allowed",
    [
        ("www.google.com", True),
        ("www.google.com:443", True),
        ("www.google.com:80", True),
        ("www.lyft.com:443", False),
        ("www.google.com.evil.example:443", False),
        ("xwww.google.com", False),
        ("wwwxgoogle.com", False),
        ("www.google.com:", False),
    ],
)
def test_authority_regex(authority, allowed):
    # Python's re agrees with RE2 on this subset (anchors, escaped dots, a counted class).
    assert bool(re.match(envoy.authority_regex("www.google.com"), authority)) is allowed


def test_changing_allowed_hosts_changes_only_the_rbac_block(settings):
    other = settings.replace(allowed_hosts=("www.google.com", "api.example.org"))
    for name in ("igw", "igw_http"):
        before, after = parsed(settings, name), parsed(other, name)
        policies = first_filter(listener(after, name))["http_filters"][0]["typed_config"]["rules"]["policies"]
        assert set(policies) == {"allow-www.google.com", "allow-api.example.org"}
        regex = policies["allow-api.example.org"]["permissions"][0]["header"]
        assert regex == {
            "name": ":authority",
            "string_match": {"safe_regex": {"regex": r"^api\.example\.org(:[0-9]+)?$"}},
        }
        # Everything but the policies is identical.
        first_filter(listener(before, name))["http_filters"][0]["typed_config"]["rules"]["policies"] = policies
        assert before == after
    assert envoy.render(settings, "sidecar") == envoy.render(other, "sidecar")


def test_ports_and_paths_come_from_settings():
    s = Settings().replace(
        ports=Ports(
            http_redirect=15003,
            tls_redirect=15000,
            igw=15010,
            igw_http=15011,
            admin_sidecar=15901,
            admin_igw=15902,
            admin_igw_http=15903,
        ),
        paths=Paths(root="/srv/tpx"),
    )
    text = "\n".join(envoy.render_all(s).values())
    for port in (15003, 15000, 15010, 15011, 15901, 15902, 15903):
        assert str(port) in text
    assert "/opt/tproxy-nb" not in text and "12000" not in text
    assert "/srv/tpx/certs/sidecar.key" in text


@pytest.mark.parametrize("name", envoy.NAMES)
def test_access_logs_are_json_with_the_shared_format(settings, name):
    logs = access_logs(parsed(settings, name))
    assert len(logs) == (3 if name == "sidecar" else 1)  # sidecar: http, tls, explicit proxy
    for entry in logs:
        cfg = entry["typed_config"]
        assert cfg["@type"].endswith("file.v3.FileAccessLog")
        assert cfg["path"] == f"{settings.paths.log}/{name}.access.log"
        assert cfg["log_format"]["json_format"] == envoy.ACCESS_LOG_FORMAT


def test_fill_blocks_indents_like_the_placeholder_and_protects_dollars():
    out = envoy.fill_blocks("a:\n  b:\n    ${blk}\nc: ${x}\n", {"blk": "k: '^v$'\nl: 2"})
    assert out == "a:\n  b:\n    k: '^v$$'\n    l: 2\nc: ${x}\n"


def test_render_rejects_unknown_name(settings):
    with pytest.raises(StepError, match="Unknown Envoy"):
        envoy.render(settings, "egress")


# --------------------------------------------------------------------------- commands and parsers


def test_command_and_paths(settings):
    cmd = envoy.command(settings, "igw")
    assert cmd[:3] == ["/opt/tproxy-nb/bin/envoy", "-c", "/opt/tproxy-nb/etc/igw.yaml"]
    assert cmd[cmd.index("--base-id") + 1] == "12"
    assert cmd[cmd.index("-l") + 1] == "debug"
    assert cmd[cmd.index("--log-path") + 1] == "/opt/tproxy-nb/log/igw.log"
    assert envoy.shm_path(settings, "sidecar") == "/dev/shm/envoy_shared_memory_110"
    assert envoy.pid_path(settings, "igw_http") == "/opt/tproxy-nb/run/igw_http.pid"
    assert envoy.listen_ports(settings, "sidecar") == {
        "http_redirect": 12003,
        "tls_redirect": 12000,
        "explicit_proxy": 12008,
        "admin_sidecar": 9901,
    }


def test_launch_script_keeps_a_waiting_parent(settings):
    script = envoy.launch_script(settings, "sidecar")
    assert script.startswith("rm -f ")
    assert "setsid sh -c " in script and script.endswith("2>&1 &")
    # The inner shell must not end with Envoy (sh would exec it and the parent would be gone).
    assert "wait $!; echo $? > /opt/tproxy-nb/run/sidecar.exit" in script


def test_process_pattern_is_anchored_and_escaped(settings):
    pat = envoy.process_pattern(settings, "igw")
    assert pat == r"^/opt/tproxy-nb/bin/envoy -c /opt/tproxy-nb/etc/igw\.yaml( |$)"
    assert re.search(pat, " ".join(envoy.command(settings, "igw")))
    assert not re.search(pat, "sh -c " + " ".join(envoy.command(settings, "igw")))
    assert not re.search(pat, " ".join(envoy.command(settings, "igw_http")))


def test_parse_ss():
    text = (
        "LISTEN 0      4096       127.0.0.1:9901       0.0.0.0:*    "
        'users:(("envoy",pid=7,fd=20),("envoy",pid=8,fd=20))\n'
        'LISTEN 0      128        [::]:22              [::]:*       users:(("sshd",pid=55,fd=4))\n'
        "garbage\n"
    )
    assert envoy.parse_ss(text) == [
        {"address": "127.0.0.1", "port": 9901, "process": "envoy", "pid": 7},
        {"address": "127.0.0.1", "port": 9901, "process": "envoy", "pid": 8},
        {"address": "[::]", "port": 22, "process": "sshd", "pid": 55},
    ]


def test_parse_listeners_and_version():
    assert envoy.parse_listeners("sidecar_http::127.0.0.1:12003\nsidecar_tls::127.0.0.1:12000\n") == [
        "127.0.0.1:12003",
        "127.0.0.1:12000",
    ]
    out = (
        "\n/opt/tproxy-nb/bin/envoy  version: "
        "9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL\n\n"
    )
    assert envoy.parse_version(out) == "1.40.0"


# --------------------------------------------------------------------------- certificates


@pytest.fixture
def cert_dir(tmp_path):
    d = tmp_path / "certs"
    certs.generate(d, Settings())
    return d


def _eku(cert: x509.Certificate) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_certificates_have_the_right_sans_ekus_and_issuers(cert_dir):
    def load(n):
        return pki.load(cert_dir / f"{n}.pem", cert_dir / f"{n}.key")

    client_ca, server_ca = load("client-ca"), load("server-ca")
    sidecar, igw, igw_http = load("sidecar"), load("igw"), load("igw_http")
    assert certs.sans(sidecar.cert) == sorted([certs.SIDECAR_DNS, certs.SIDECAR_URI])
    assert _eku(sidecar.cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert certs.sans(igw.cert) == ["igw.tproxy-nb.internal"]
    assert certs.sans(igw_http.cert) == ["igw-http.tproxy-nb.internal"]
    for gw in (igw, igw_http):
        assert _eku(gw.cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
        gw.cert.verify_directly_issued_by(server_ca.cert)
    sidecar.cert.verify_directly_issued_by(client_ca.cert)
    with pytest.raises((ValueError, InvalidSignature)):
        sidecar.cert.verify_directly_issued_by(server_ca.cert)


def test_keys_are_private(cert_dir):
    assert stat.S_IMODE(os.stat(cert_dir).st_mode) == 0o700
    for key in cert_dir.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    for pem in cert_dir.glob("*.pem"):
        assert stat.S_IMODE(pem.stat().st_mode) == 0o644, pem


def test_generate_is_idempotent_and_repairs(cert_dir):
    before = {p.name: p.read_bytes() for p in cert_dir.iterdir()}
    again = certs.generate(cert_dir, Settings())
    assert not any(v["created"] for v in again.values())
    assert {p.name: p.read_bytes() for p in cert_dir.iterdir()} == before
    # A missing leaf key: only that leaf is remade.
    (cert_dir / "igw.key").unlink()
    redo = certs.generate(cert_dir, Settings())
    assert [n for n, v in redo.items() if v["created"]] == ["igw"]
    # A new server CA: every certificate it signs is remade, the client side is kept.
    (cert_dir / "server-ca.pem").unlink()
    redo = certs.generate(cert_dir, Settings())
    assert sorted(n for n, v in redo.items() if v["created"]) == ["igw", "igw_http", "server-ca"]


def test_upload_plan_sends_only_what_envoy_needs(cert_dir):
    s = Settings()
    host = FakeHost()
    for acct, role in ((s.envoy, "envoy"), (s.service, "service")):
        accounts.plan_account(facts.accounts(host), acct, role).apply(host)
    plan = files.plan_upload(host, s, cert_dir)
    assert "ca.key" not in str(plan)
    plan.apply(host)
    uploaded = {p: f for p, f in host.files.items() if p.startswith(s.paths.certs + "/")}
    assert set(uploaded) == {f"{s.paths.certs}/{f}" for f, _ in certs.upload_files(s)}
    assert not any(r.endswith("ca.key") for r in uploaded)
    for remote, f in uploaded.items():
        assert (f.owner, f.group) == (s.envoy.user, s.envoy.group)
        assert f.mode == (0o400 if remote.endswith(".key") else 0o644)
    assert not any(c.startswith(("install", "chmod", "chown")) for c in host.commands())  # the directory is plan_dirs's


def test_upload_plan_generates_missing_files_only_when_applied(tmp_path):
    local = tmp_path / "certs"
    plan = files.plan_upload(FakeHost(), Settings(), local)
    made = "client-ca, server-ca, sidecar, igw, igw_http, egress-ca, deny-www.lyft.com"
    assert f"(local) generate {made} in {local}" in str(plan)
    assert not local.exists()


def test_config_plan_uploads_root_owned_group_readable(settings):
    host = FakeHost()
    accounts.plan_account(facts.accounts(host), settings.envoy, "envoy").apply(host)
    files.plan_configs(host, settings).apply(host)
    configs = [envoy.config_path(settings, n) for n in envoy.NAMES]
    assert [p for p in host.files if p.endswith(".yaml")] == configs
    for path in configs:
        f = host.files[path]
        assert (f.owner, f.group, f.mode) == ("root", settings.envoy.group, 0o640)


# --------------------------------------------------------------------------- tls_deny modes and the explicit proxy


def _tls_chains(s):
    listeners = {x["name"]: x for x in yaml.safe_load(envoy.render(s, "sidecar"))["static_resources"]["listeners"]}
    return listeners["sidecar_tls"]["filter_chains"]


def test_reset_is_the_write_up_a_tunnel_as_soon_as_the_connection_is_accepted(settings):
    (chain,) = _tls_chains(settings)
    (tcp,) = chain["filters"]
    assert tcp["name"] == "envoy.filters.network.tcp_proxy"
    assert "upstream_connect_mode" not in tcp["typed_config"]


def test_read_first_reads_the_client_hello_before_the_connect(settings):
    (chain,) = _tls_chains(settings.replace(tls_deny="read-first"))
    cfg = chain["filters"][0]["typed_config"]
    assert cfg["upstream_connect_mode"] == "ON_DOWNSTREAM_DATA" and cfg["max_early_data_bytes"] > 0


def test_sni_judges_the_allowlist_on_the_server_name_in_front_of_the_tunnel(settings):
    s = settings.replace(tls_deny="sni", allowed_hosts=("www.google.com", "api.example.org"))
    (chain,) = _tls_chains(s)
    rbac, tcp = chain["filters"]
    assert rbac["name"] == "envoy.filters.network.rbac" and tcp["name"] == "envoy.filters.network.tcp_proxy"
    rules = rbac["typed_config"]["rules"]
    assert rules["action"] == "ALLOW"
    assert {p["permissions"][0]["requested_server_name"]["exact"] for p in rules["policies"].values()} == set(
        s.allowed_hosts
    )


def test_deny_page_answers_403_itself_with_one_certificate_per_denied_name(settings):
    s = settings.replace(tls_deny="deny-page", denied_examples=("www.lyft.com", "www.example.org", "www.google.com"))
    chains = _tls_chains(s)
    # www.google.com is allowed as well: it gets no deny page.
    assert [c["filter_chain_match"].get("server_names") for c in chains] == [
        ["www.lyft.com"],
        ["www.example.org"],
        None,
    ]
    lyft = chains[0]
    tls = lyft["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"][0]
    assert tls["certificate_chain"]["filename"] == f"{s.paths.certs}/deny-www.lyft.com.pem"
    route = lyft["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["direct_response"]["status"] == 403
    assert "www.lyft.com" in route["direct_response"]["body"]["inline_string"]


def test_only_the_sidecar_changes_with_the_mode(settings):
    for mode in ("read-first", "sni", "deny-page"):
        other = settings.replace(tls_deny=mode)
        assert envoy.render(other, "igw") == envoy.render(settings, "igw")
        assert envoy.render(other, "sidecar") != envoy.render(settings, "sidecar")
        assert f"# tls_deny: {mode}" in envoy.render(other, "sidecar")


# --------------------------------------------------------------------------- tunnel: http1 | http2


def test_http1_tunnels_use_envoys_default_protocol_and_offer_no_alpn(settings):
    igw = cluster(parsed(settings, "sidecar"), "igw")
    assert "typed_extension_protocol_options" not in igw
    assert "alpn_protocols" not in igw["transport_socket"]["typed_config"]["common_tls_context"]
    assert "# tunnel: http1" in envoy.render(settings, "sidecar")


def test_http2_tunnels_ask_for_h2_and_ping_the_pooled_connection(settings):
    s = settings.replace(tunnel="http2")
    igw = cluster(parsed(s, "sidecar"), "igw")
    assert igw["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"] == ["h2"]
    options = igw["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    h2 = options["explicit_http_config"]["http2_protocol_options"]
    assert set(h2["connection_keepalive"]) == {"interval", "timeout"}
    # Only the tunnel to igw changes: plain HTTP to igw_http stays HTTP/1.1 with keep-alive.
    assert "typed_extension_protocol_options" not in cluster(parsed(s, "sidecar"), "igw_http")


def test_igw_takes_connect_over_http1_and_http2_whatever_the_sidecar_uses(settings):
    assert envoy.render(settings.replace(tunnel="http2"), "igw") == envoy.render(settings, "igw")
    lis = listener(parsed(settings, "igw"), "igw")
    tls = lis["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["alpn_protocols"] == ["h2", "http/1.1"]
    hcm = first_filter(lis)
    assert hcm["http2_protocol_options"] == {"allow_connect": True}
    assert hcm["upgrade_configs"] == [{"upgrade_type": "CONNECT"}]


@pytest.mark.parametrize("mode", ["reset", "read-first", "sni", "deny-page"])
def test_each_tls_deny_mode_composes_with_http2(settings, mode):
    both = settings.replace(tunnel="http2", tls_deny=mode)
    tls_only = settings.replace(tls_deny=mode)
    assert _tls_chains(both) == _tls_chains(tls_only)
    assert cluster(parsed(both, "sidecar"), "igw") == cluster(
        parsed(settings.replace(tunnel="http2"), "sidecar"), "igw"
    )


def test_the_explicit_proxy_relays_connect_to_igw_and_plain_http_to_igw_http(settings):
    listeners = {
        x["name"]: x for x in yaml.safe_load(envoy.render(settings, "sidecar"))["static_resources"]["listeners"]
    }
    ex = listeners["sidecar_explicit"]
    assert ex["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": settings.ports.explicit_proxy}
    hcm = ex["filter_chains"][0]["filters"][0]["typed_config"]
    connect, plain = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert "connect_matcher" in connect["match"] and connect["route"]["cluster"] == "igw"
    assert "connect_config" not in connect["route"]["upgrade_configs"][0]  # relayed, not ended here
    assert plain["route"]["cluster"] == "igw_http"


def test_the_access_log_carries_why_the_tunnel_failed():
    assert envoy.ACCESS_LOG_FORMAT["upstream_transport_failure_reason"] == "%UPSTREAM_TRANSPORT_FAILURE_REASON%"
    assert envoy.ACCESS_LOG_FORMAT["downstream_local_close_reason"] == "%DOWNSTREAM_LOCAL_CLOSE_REASON%"
    assert envoy.ACCESS_LOG_FORMAT["connection_termination_details"] == "%CONNECTION_TERMINATION_DETAILS%"
