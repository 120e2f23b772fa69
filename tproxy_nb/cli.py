"""``tproxy-nb``: the command line, a thin layer over the library.

Exit codes: 0 ok, 1 a check ran and saw an outcome other than the expected one,
2 bad usage, bad input or a target that could not do the job (one paragraph, no
traceback unless ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from .errors import TproxyError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _positive(kind):
    """An argparse type: a number above zero, else a usage error (exit 2) instead of a traceback."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be above zero")
        return value

    return parse


def _common(p: argparse.ArgumentParser, target: bool = True, settings: bool = True, plan: bool = False) -> None:
    if target:
        p.add_argument(
            "--target",
            default="lab",
            help="'lab' (default), 'lab:rootfs', user@host[:port], a ~/.ssh/config alias, or replay:DIR (run, trace)",
        )
        p.add_argument("--key", default=None, help="private key file for a non-lab target")
        p.add_argument("--known-hosts", default=None, help="known_hosts file (default ~/.ssh/known_hosts)")
        p.add_argument(
            "--passphrase-env", default=None, metavar="NAME", help="environment variable holding the key's passphrase"
        )
        p.add_argument("--ssh-config", default=None, metavar="FILE", help="ssh_config file (default ~/.ssh/config)")
    if settings:
        p.add_argument("--settings", default=None, help="settings YAML file (default: built-in settings)")
    if plan:
        p.add_argument("--plan", action="store_true", help="show what would change, change nothing")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tproxy-nb", description="Reproduce and explain an Envoy transparent-proxy egress setup."
    )
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True)

    lab = sub.add_parser("lab", help="the local lab (network namespaces + sshd)")
    lab.add_argument("action", choices=["up", "down", "status"])
    lab.add_argument("--json", action="store_true")
    lab.add_argument(
        "--flavour",
        choices=["namespace", "rootfs"],
        default="namespace",
        help="up: also the host with its own Debian root filesystem (target lab:rootfs; first build takes minutes)",
    )
    lab.add_argument("--settings", default=None, help="settings YAML (down: which paths/base ids to clean)")

    p = sub.add_parser("provision", help="users, Envoy binary, certificates and configs on the target")
    _common(p, plan=True)
    p.add_argument("--remove", action="store_true", help="undo provisioning (users, files)")

    p = sub.add_parser(
        "iptables", help="the interception rules: the ENVOY_EGRESS NAT chain, or TPROXY's (mangle, ip rule)"
    )
    p.add_argument("action", choices=["apply", "show", "remove"])
    _common(p, plan=True)
    p.add_argument(
        "--guard",
        type=_positive(float),
        default=None,
        help="rollback guard in seconds (default: on for non-lab targets)",
    )

    p = sub.add_parser("envoy", help="the three Envoy processes")
    p.add_argument("action", choices=["start", "stop", "status"])
    _common(p)

    p = sub.add_parser("check", help="run the four curl cases as the service user")
    _common(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--repeat", type=_positive(int), default=1)
    p.add_argument(
        "--explicit-proxy", action="store_true", help="send the cases to the sidecar's explicit proxy port (curl -x)"
    )
    p.add_argument(
        "--trust-egress-ca",
        action="store_true",
        help="the denied HTTPS case trusts the egress CA (tls_deny: deny-page then shows its 403)",
    )

    p = sub.add_parser("trace", help="make one request as the service user and follow it through the Envoys' logs")
    p.add_argument("case", nargs="?", default="https denied", help="one of the four cases (default: 'https denied')")
    _common(p)

    p = sub.add_parser("logs", help="parse Envoy debug logs and write them to a Parquet file")
    p.add_argument("paths", nargs="+", metavar="PATH", help="Envoy debug log files")
    p.add_argument("--to", nargs=2, metavar=("FORMAT", "OUT"), required=True, help="parquet OUT")

    p = sub.add_parser("run", help="lab up + every notebook headless + report in build/report/")
    _common(p)
    p.add_argument("--out", default="build/report")
    return ap


def _settings(args):
    from .settings import load_settings

    return load_settings(args.settings)


def _host(args):
    from .targets import connect

    host = connect(
        args.target,
        key_file=args.key,
        known_hosts=args.known_hosts,
        passphrase_env=args.passphrase_env,
        ssh_config=args.ssh_config,
    )
    host.connect()  # fail here, before any progress bar or plan is shown
    return host


def _print_plan(plan) -> None:
    print(plan)


def cmd_lab(args) -> int:
    from . import lab

    lab.require_root()
    if args.action == "up":
        info = lab.up(progress=not args.json)
        hosts = [info, lab.rootfs.up(progress=not args.json)] if args.flavour == "rootfs" else [info]
        if args.json:
            print(lab.to_json(lab.status()))
        for h in hosts if not args.json else []:
            print(f"lab is up: ssh -i {h.key_file} -o UserKnownHostsFile={h.known_hosts} {h.user}@{h.host}")
    elif args.action == "down":
        settings = _settings(args) if args.settings else None
        removed = lab.down(settings)
        if args.json:
            print(json.dumps({"removed": removed}))
        else:
            print("lab is down" + (": removed " + ", ".join(removed) if removed else " (nothing was there)"))
    else:
        info = lab.status()
        if args.json:
            print(lab.to_json(info))
        else:
            hosts = [info, lab.rootfs.status()] if lab.rootfs.leftovers() else [info]
            for h in hosts:
                print(
                    ("healthy" if h.healthy else "not healthy: " + "; ".join(h.problems))
                    + f" ({h.user}@{h.host}:{h.port})"
                )
    return EXIT_OK


def cmd_provision(args) -> int:
    from .steps import provision

    settings = _settings(args)
    host = _host(args)
    with host:
        if args.remove:
            for plan in provision.plan_remove(host, settings):
                if not args.plan:
                    plan.apply(host)
                _print_plan(plan)
        else:
            # Each step is planned after the one before it was applied, so every plan shown is true.
            for plan in provision.provision(host, settings, dry_run=args.plan):
                _print_plan(plan)
    return EXIT_OK


def cmd_iptables(args) -> int:
    from .steps import firewall as iptables
    from .targets import is_lab

    settings = _settings(args)
    host = _host(args)
    with host:
        if args.action == "show":
            print("backend:", iptables.backend(host))
            df = iptables.show(host)
            print(
                df.to_string(index=False)
                if len(df)
                else "no rule of ours is applied (ENVOY_EGRESS, ENVOY_MARK, ENVOY_TPROXY)"
            )
            routes = iptables.show_routing(host)
            if len(routes):  # interception: tproxy
                print(routes.to_string(index=False))
            return EXIT_OK
        if args.action == "apply":
            # The lab's sshd is local: no one can be locked out there, so no rollback guard by default.
            guard = (
                args.guard
                if args.guard is not None
                else (None if is_lab(args.target) else iptables.DEFAULT_GUARD_SECONDS)
            )
            plan = (
                iptables.plan_apply(host, settings, guard_seconds=guard)
                if args.plan
                else iptables.apply(host, settings, guard_seconds=guard)
            )
        else:
            plan = iptables.plan_remove(host) if args.plan else iptables.remove(host)
        _print_plan(plan)
    return EXIT_OK


def cmd_envoy(args) -> int:
    from .steps import envoy_proc as envoy

    settings = _settings(args)
    host = _host(args)
    with host:
        if args.action == "start":
            envoy.start(host, settings)
        elif args.action == "stop":
            envoy.stop(host, settings)
        print(envoy.status(host, settings).to_string(index=False))
    return EXIT_OK


def cmd_check(args) -> int:
    from .analysis import curl
    from .steps import check

    settings = _settings(args)
    host = _host(args)
    with host:
        df = check.run_cases(
            host,
            settings,
            repeat=args.repeat,
            progress=not args.json,
            explicit_proxy=args.explicit_proxy,
            trust_egress_ca=args.trust_egress_ca,
        )
    if args.json:
        print(json.dumps(curl.to_records(df), indent=2))
    else:
        print(
            f"tls_deny: {settings.tls_deny}; tunnel: {settings.tunnel}"
            + (f"; through {check.proxy_url(settings)}" if args.explicit_proxy else "")
        )
        print(df[["case", "url", "outcome", "expected", "http_code", "exit_code", "error"]].to_string(index=False))
    return EXIT_OK if bool(df["as_expected"].all()) else EXIT_CHECK_FAILED


def cmd_trace(args) -> int:
    from .analysis import curl, trace
    from .errors import StepError
    from .present import bundle
    from .steps import check, envoy_proc
    from .targets import replay_dir

    replay = replay_dir(args.target)
    recorded = bundle.load(replay) if replay is not None else None
    settings = recorded.settings if recorded and not args.settings else _settings(args)
    known = {c.name: c for c in curl.cases(settings)}
    if args.case not in known:
        raise StepError(f"Unknown case {args.case!r}; choose one of: {', '.join(repr(n) for n in known)}.")
    if recorded is not None:
        # The recorded run's last request of the case, through the recorded logs: no host.
        rows = recorded.results[recorded.results["case"] == args.case]
        if rows.empty:
            raise StepError(f"The bundle {replay} recorded no request of the case {args.case!r}.")
        result = rows.iloc[-1]
        events = trace.trace(result, recorded.parsed())
    else:
        host = _host(args)
        with host:
            check.require_curl(host)
            # The gateways start their rbac logger at info; the trace's verdict line needs it at debug.
            for gateway in envoy_proc.GATEWAYS:
                envoy_proc.set_log_level(host, settings, gateway, "rbac", "debug")
            result = check.run_case(host, known[args.case], settings.service.user)
            events = trace.trace(result, envoy_proc.fetch_logs(host, settings))  # fetch waits for Envoy's log flush
    print(
        f"{args.case}: {known[args.case].url} -> {result['outcome']} "
        f"(http {result['http_code']}, curl exit {result['exit_code']})"
    )
    if events.empty:
        raise StepError(
            f"Cannot follow the request: {events.attrs.get('problem')}. "
            "Are the Envoys running (tproxy-nb envoy status)?"
        )
    start = events["time"].min()
    for row in events.itertuples():
        print(f"  +{(row.time - start).total_seconds() * 1000:6.1f} ms  {row.process:<9} {row.event}")
    links = sorted(set(events.loc[events["process"] != "curl", "link"]))
    print("joined by: " + "; ".join(links))
    return EXIT_OK


def cmd_logs(args) -> int:
    from .present.parquet import ExportError, logs_to_parquet

    kind, out = args.to
    if kind != "parquet":
        raise ExportError(f"--to {kind}: the one format written is parquet (--to parquet OUT).")
    rows = logs_to_parquet(args.paths, out)
    print(f"{rows} rows from {len(args.paths)} log(s) written to {out}")
    return EXIT_OK


def cmd_run(args) -> int:
    import os

    from .present import report
    from .remote.keys import PASSPHRASE_ENV_VAR, Passphrase
    from .remote.sshconfig import SSH_CONFIG_ENV_VAR

    # The notebooks' kernels inherit the environment: that is how they learn these two.
    if args.passphrase_env:
        Passphrase.from_env(args.passphrase_env)  # unset: fail now, before any notebook runs
        os.environ[PASSPHRASE_ENV_VAR] = args.passphrase_env
    if args.ssh_config:
        os.environ[SSH_CONFIG_ENV_VAR] = os.path.abspath(args.ssh_config)
    return report.run_all(
        target=args.target,
        key_file=args.key,
        settings_file=args.settings,
        out_dir=args.out,
        known_hosts=args.known_hosts,
    )


COMMANDS: dict[str, Callable] = {
    "lab": cmd_lab,
    "provision": cmd_provision,
    "iptables": cmd_iptables,
    "envoy": cmd_envoy,
    "check": cmd_check,
    "trace": cmd_trace,
    "logs": cmd_logs,
    "run": cmd_run,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TproxyError as e:
        if args.debug:
            raise
        print(f"tproxy-nb {args.command}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        # A local file or socket problem (unreadable key, full disk): still one paragraph, still exit 2.
        if args.debug:
            raise
        print(
            f"tproxy-nb {args.command}: {e.strerror or e} ({getattr(e, 'filename', None) or 'no file'}). "
            "Fix that and re-run; every step is idempotent.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(
            f"tproxy-nb {args.command}: interrupted; re-run the same command to finish (every step is idempotent).",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
