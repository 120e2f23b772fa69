"""The chain's certificates: private CAs, the sidecar's client cert, the gateways' server certs, deny pages.

Two CAs, so each side trusts only what it must: the gateways accept client
certificates from the *client CA* only, the sidecar accepts server
certificates from the *server CA* only. CA private keys stay in the local
directory; :func:`tproxy_nb.steps.files.plan_upload` sends only what :data:`UPLOAD` lists.
:func:`to_make` says what :func:`generate` would make without writing anything (a dry run).

Local layout (``certs/`` at the repo root, git-ignored), and what goes where::

    client-ca.pem  client-ca.key     CA that signs the sidecar cert   (key stays local)
    server-ca.pem  server-ca.key     CA that signs the gateway certs  (key stays local)
    sidecar.pem    sidecar.key       client cert (EKU clientAuth), presented by the sidecar
    igw.pem        igw.key           server cert of the CONNECT gateway
    igw_http.pem   igw_http.key      server cert of the plain-HTTP gateway
    egress-ca.pem  egress-ca.key     CA of the sidecar's deny pages   (key stays local; tls_deny: deny-page)
    deny-<name>.pem deny-<name>.key  one server cert per denied example name, signed by the egress CA

Example::

    info = generate(None, settings)            # creates or keeps ./certs/*
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from ..settings import Settings
from . import pki

#: Renew a certificate when it expires within this many days.
RENEW_DAYS = 30
#: The SPIFFE-style identity of the sidecar; the gateways accept only this client.
SIDECAR_URI = "spiffe://tproxy-nb/sidecar"
SIDECAR_DNS = "sidecar.tproxy-nb.internal"
#: Names the sidecar checks in each gateway's certificate (underscore is not valid in DNS).
GATEWAY_DNS = {"igw": "igw.tproxy-nb.internal", "igw_http": "igw-http.tproxy-nb.internal"}


@dataclass(frozen=True)
class Spec:
    """One certificate we want: its file stem, issuer and identity.

    name: file stem (``<name>.pem`` / ``<name>.key``).
    issuer: stem of the CA that signs it, or None for a CA itself.
    cn: subject common name.
    dns, uris: subject alternative names.
    client, server: extended key usages.
    """

    name: str
    issuer: str | None
    cn: str
    dns: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    client: bool = False
    server: bool = False


SPECS: tuple[Spec, ...] = (
    Spec("client-ca", None, "tproxy-nb client CA"),
    Spec("server-ca", None, "tproxy-nb server CA"),
    Spec("sidecar", "client-ca", "sidecar", dns=(SIDECAR_DNS,), uris=(SIDECAR_URI,), client=True),
    Spec("igw", "server-ca", GATEWAY_DNS["igw"], dns=(GATEWAY_DNS["igw"],), server=True),
    Spec("igw_http", "server-ca", GATEWAY_DNS["igw_http"], dns=(GATEWAY_DNS["igw_http"],), server=True),
)

#: The CA that signs the deny-page certificates (tls_deny: deny-page). A client that trusts it can be shown
#: a 403 for a denied name: the sidecar then impersonates that site, which is what trusting it means.
EGRESS_CA = Spec("egress-ca", None, "tproxy-nb egress CA")


def deny_stem(name: str) -> str:
    """File stem of the deny-page certificate for the denied host ``name``.

    Example: ``deny_stem("www.lyft.com")`` -> ``"deny-www.lyft.com"``.
    """
    return f"deny-{name}"


def specs(settings: Settings | None = None) -> tuple[Spec, ...]:
    """Every certificate the chain needs: :data:`SPECS`, the egress CA and one deny-page cert per denied example.

    Example: ``[x.name for x in specs(Settings())][-2:]`` -> ``["egress-ca", "deny-www.lyft.com"]``.
    """
    names = (settings or Settings()).denied_examples
    deny = tuple(Spec(deny_stem(n), EGRESS_CA.name, n, dns=(n,), server=True) for n in names)
    return SPECS + (EGRESS_CA,) + deny


def upload_files(settings: Settings | None = None) -> tuple[tuple[str, int], ...]:
    """:data:`UPLOAD` plus each deny-page certificate and key (never a CA key).

    Example: ``upload_files(Settings())[-1]`` -> ``("deny-www.lyft.com.key", 0o400)``.
    """
    names = (settings or Settings()).denied_examples
    return UPLOAD + tuple(
        (f"{deny_stem(n)}.{ext}", mode) for n in names for ext, mode in (("pem", 0o644), ("key", 0o400))
    )


#: What Envoy reads on the target: (file, mode). CA keys are deliberately absent.
UPLOAD: tuple[tuple[str, int], ...] = (
    ("client-ca.pem", 0o644),
    ("server-ca.pem", 0o644),
    ("sidecar.pem", 0o644),
    ("sidecar.key", 0o400),
    ("igw.pem", 0o644),
    ("igw.key", 0o400),
    ("igw_http.pem", 0o644),
    ("igw_http.key", 0o400),
)


#: Environment variable that chooses the local certificate directory (default: :func:`default_dir`'s rule).
DIR_ENV = "TPROXY_NB_CERTS_DIR"


def default_dir() -> Path:
    """``$TPROXY_NB_CERTS_DIR`` if set, else ``certs/`` at the repo root from a checkout, else ``./certs``.

    Example: ``default_dir()`` -> ``PosixPath('/work/main/certs')``.
    """
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser()
    root = Path(__file__).resolve().parents[2]
    return root / "certs" if (root / "pyproject.toml").is_file() else Path.cwd() / "certs"


def remote_paths(settings: Settings) -> dict[str, str]:
    """Where Envoy finds each file on the target (keys used by the config templates).

    settings: the tutorial settings (only ``paths.certs`` is used).

    Example: ``remote_paths(s)["sidecar_cert"]`` -> ``"/opt/tproxy-nb/certs/sidecar.pem"``.
    """
    d = settings.paths.certs
    return {
        "client_ca": f"{d}/client-ca.pem",
        "server_ca": f"{d}/server-ca.pem",
        "sidecar_cert": f"{d}/sidecar.pem",
        "sidecar_key": f"{d}/sidecar.key",
        "igw_cert": f"{d}/igw.pem",
        "igw_key": f"{d}/igw.key",
        "igw_http_cert": f"{d}/igw_http.pem",
        "igw_http_key": f"{d}/igw_http.key",
    }


def deny_paths(settings: Settings, name: str) -> dict[str, str]:
    """Where the sidecar finds the deny-page certificate and key of the denied host ``name``.

    Example: ``deny_paths(s, "www.lyft.com")["deny_cert"]`` -> ``"/opt/tproxy-nb/certs/deny-www.lyft.com.pem"``.
    """
    stem = f"{settings.paths.certs}/{deny_stem(name)}"
    return {"deny_cert": f"{stem}.pem", "deny_key": f"{stem}.key"}


def _usable(pair: pki.KeyPair, spec: Spec, ca: pki.KeyPair | None) -> bool:
    """True when an existing pair still fits ``spec``: key matches, not expiring, signed by ``ca``, right SANs."""
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if pair.cert.public_key().public_bytes(enc, pub) != pair.key.public_key().public_bytes(enc, pub):
        return False
    if pki.expires_within(pair.cert, RENEW_DAYS):
        return False
    if ca is None:
        return True
    try:
        pair.cert.verify_directly_issued_by(ca.cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return sans(pair.cert) == sorted(spec.dns + spec.uris)


def sans(cert: x509.Certificate) -> list[str]:
    """DNS and URI subject alternative names of ``cert``, sorted.

    Example: ``sans(pki.load("certs/sidecar.pem", "certs/sidecar.key").cert)``.
    """
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return sorted(ext.get_values_for_type(x509.DNSName) + ext.get_values_for_type(x509.UniformResourceIdentifier))


def _load(directory: Path, name: str) -> pki.KeyPair | None:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    if not (cert.is_file() and key.is_file()):
        return None
    try:
        return pki.load(cert, key)
    except (ValueError, TypeError, OSError):
        # Unreadable or corrupt: regenerate rather than fail; these are throwaway tutorial certs.
        return None


def _walk(directory: Path, make: bool, settings: Settings | None = None):
    """Go through :func:`specs` in order, yielding ``(spec, pair, remade)``; with ``make``, (re)make what needs it.

    A certificate needs (re)making when a file is missing or unreadable, it expires within
    ``RENEW_DAYS``, its key does not match, its SANs changed, or its CA is (re)made. Without
    ``make`` nothing is written and a pair that would be remade is yielded as None.
    """
    pairs: dict[str, pki.KeyPair | None] = {}
    remade: dict[str, bool] = {}
    for spec in specs(settings):
        ca = pairs.get(spec.issuer) if spec.issuer else None
        pair = _load(directory, spec.name)
        need = pair is None or bool(spec.issuer and remade[spec.issuer]) or not _usable(pair, spec, ca)
        if need:
            pair = None
            if make:
                if spec.issuer is None:
                    pair = pki.make_ca(spec.cn)
                else:
                    issuer = pairs[spec.issuer]
                    assert issuer is not None  # made just above, in SPECS order
                    pair = pki.issue(
                        issuer,
                        spec.cn,
                        dns=list(spec.dns),
                        uris=list(spec.uris),
                        client=spec.client,
                        server=spec.server,
                    )
                pki.write(pair, directory / f"{spec.name}.pem", directory / f"{spec.name}.key")
        pairs[spec.name], remade[spec.name] = pair, need
        yield spec, pair, need


def to_make(local_dir: str | os.PathLike | None, settings: Settings | None = None) -> tuple[str, ...]:
    """The certificates :func:`generate` would (re)make in ``local_dir``, in order; writes nothing.

    local_dir: the local directory (None: :func:`default_dir`); it need not exist.
    settings: the denied examples (one deny-page certificate each); None: the defaults.

    Example: ``to_make("/nonexistent")`` -> ``("client-ca", "server-ca", "sidecar", "igw", "igw_http",
    "egress-ca", "deny-www.lyft.com")``.
    """
    directory = Path(local_dir) if local_dir is not None else default_dir()
    return tuple(spec.name for spec, _pair, need in _walk(directory, make=False, settings=settings) if need)


def generate(local_dir: str | os.PathLike | None, settings: Settings | None = None) -> dict[str, dict]:
    """Create the CAs and certificates in ``local_dir``, keeping those that are still valid.

    What is (re)made is what :func:`to_make` says. Keys are written 0600, the directory 0700.

    local_dir: where to keep the files (None: :func:`default_dir`).
    settings: the denied examples (one deny-page certificate each); None: the defaults.

    Returns ``{name: {"cert", "key", "created", "not_after", "sans"}}``.

    Example: ``pd.DataFrame(generate("certs", s)).T``.
    """
    directory = Path(local_dir) if local_dir is not None else default_dir()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    out: dict[str, dict] = {}
    for spec, pair, created in _walk(directory, make=True, settings=settings):
        assert pair is not None
        out[spec.name] = {
            "cert": str(directory / f"{spec.name}.pem"),
            "key": str(directory / f"{spec.name}.key"),
            "created": created,
            "not_after": pair.cert.not_valid_after_utc.isoformat(),
            "sans": sans(pair.cert),
        }
    return out
