"""The keys offered when logging in, in the order ``ssh`` offers them: key files, ssh-agent, passphrases.

Order: each identity file (the agent's copy when the agent holds it, else the file when it opens
without a passphrase); then the agent's other keys (not with IdentitiesOnly); last the files that need
a passphrase, which is asked for only then (from ``--passphrase-env NAME``, else a prompt on a terminal).
A key that needs a passphrase nobody can give is skipped and named in the error if nothing else works.

Example::

    keys = KeySources(resolved, Passphrase.from_env("MY_KEY_PASS"), agent_keys())
    client.connect(..., auth_strategy=keys)
"""

from __future__ import annotations

import base64
import getpass
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.auth_strategy import AuthSource, AuthStrategy, InMemoryPrivateKey

from ..errors import ConnectError
from .sshconfig import Resolved

#: In a notebook (no command line), names the variable that holds the key's passphrase.
PASSPHRASE_ENV_VAR = "TPROXY_NB_PASSPHRASE_ENV"


@dataclass(frozen=True)
class Passphrase:
    """Where a key's passphrase comes from.

    value: the passphrase itself (None: not given).
    origin: how it was given, for messages ("the environment variable KEY_PASS").
    prompt: ask on the terminal (getpass) when a key needs one and no value was given.

    Example: ``Passphrase.from_env("KEY_PASS").origin`` -> ``"the environment variable KEY_PASS"``.
    """

    value: str | None = None
    origin: str = ""
    prompt: bool = False

    @classmethod
    def from_env(cls, name: str | None = None, prompt: bool | None = None) -> Passphrase:
        """The passphrase in environment variable ``name`` (or the one ``TPROXY_NB_PASSPHRASE_ENV`` names).

        name: the variable's name as given to ``--passphrase-env``; None: none given.
        prompt: ask on the terminal when no variable is named (default: when stdin is a terminal).
        """
        name = name or os.environ.get(PASSPHRASE_ENV_VAR) or None
        if name:
            if name not in os.environ:
                raise ConnectError(
                    f"The key's passphrase should be in the environment variable {name}, but it is not set. "
                    f"Set it in the environment that runs tproxy-nb (read -s {name}; export {name}) "
                    "or load the key into ssh-agent (ssh-add KEY) and leave --passphrase-env out."
                )
            return cls(os.environ[name], f"the environment variable {name}")
        if prompt is None:
            prompt = sys.stdin is not None and sys.stdin.isatty()
        return cls(prompt=prompt)

    def get(self, path: Path) -> str | None:
        """The passphrase for the key ``path``: the value, a prompt's answer, or None."""
        if self.value is not None:
            return self.value
        if self.prompt:
            return getpass.getpass(f"Passphrase for key {path}: ")
        return None


def agent_keys() -> tuple[list[paramiko.AgentKey], paramiko.Agent | None, str]:
    """Keys a running ssh-agent (``SSH_AUTH_SOCK``) holds; the agent (close it after use); a note on failure."""
    if not os.environ.get("SSH_AUTH_SOCK"):
        return [], None, ""
    try:
        agent = paramiko.Agent()
        return list(agent.get_keys()), agent, ""
    except (paramiko.SSHException, OSError) as e:
        return [], None, f"the ssh-agent at SSH_AUTH_SOCK did not answer ({e})"


def _public_blob(path: Path) -> bytes | None:
    """The public half of a key file from ``FILE.pub``, as the agent reports it (None when absent)."""
    pub = path.with_name(path.name + ".pub")
    try:
        fields = pub.read_text().split()
        return base64.b64decode(fields[1]) if len(fields) > 1 else None
    except (OSError, ValueError):
        return None


def _open(path: Path, password: str | None = None) -> paramiko.PKey | None:
    """The key in ``path``; None when it needs a passphrase that was not given."""
    try:
        # cryptography wants the password as bytes (paramiko passes it through unchanged).
        return paramiko.PKey.from_path(path, password=password.encode() if password is not None else None)  # type: ignore[arg-type]
    except (paramiko.PasswordRequiredException, TypeError):
        # paramiko raises TypeError for an encrypted OpenSSH-format key without a password.
        return None


class KeySources(AuthStrategy):
    """paramiko's auth strategy for one :class:`Resolved` target, recording what it offered.

    resolved: the target (its user, identity files, IdentitiesOnly).
    passphrase: where a locked key's passphrase comes from.
    agent: the agent's keys (``agent_keys()[0]``).
    """

    def __init__(self, resolved: Resolved, passphrase: Passphrase, agent: list[paramiko.AgentKey]):
        super().__init__(ssh_config=paramiko.SSHConfig())
        self.resolved = resolved
        self.passphrase = passphrase
        self.agent = agent
        self.offered: list[str] = []
        self.locked: list[Path] = []
        self.problems: list[str] = []

    def files(self) -> list[Path]:
        return [f for f in self.resolved.identity_files if f.is_file()]

    def precheck(self) -> None:
        """Before connecting: fail now when no key could be offered at all (nothing would be gained by trying).

        Raises the passphrase paragraph when the only keys need a passphrase nobody can give, and a
        "no key" paragraph when there is no key file and no agent key.
        """
        if self.agent and not self.resolved.identities_only:
            return
        blobs = {k.asbytes() for k in self.agent}
        locked = []
        for path in self.files():
            if _public_blob(path) in blobs:
                return
            try:
                if _open(path) is not None:
                    return
            except (paramiko.SSHException, ValueError, OSError):
                continue  # unreadable: said in the error if nothing else works
            locked.append(path)
        if locked and self.passphrase.value is None and not self.passphrase.prompt:
            raise locked_key_error(locked, self.resolved.name)
        if not locked:
            named = ", ".join(str(f) for f in self.resolved.identity_files) or "none"
            raise ConnectError(
                f"No private key to log in to {self.resolved.name}: none of the key files ({named}) can be read, "
                "and no ssh-agent offers a key (SSH_AUTH_SOCK"
                + (" is set but the agent holds no usable key)." if os.environ.get("SSH_AUTH_SOCK") else " is unset).")
                + " Pass --key FILE (key_file= in Python, KEY_FILE in a notebook), set IdentityFile in ~/.ssh/config, "
                "or add the key to ssh-agent."
            )

    def get_sources(self) -> Iterator[AuthSource]:
        user = self.resolved.user
        self.offered, self.locked, self.problems = [], [], []
        by_blob = {k.asbytes(): k for k in self.agent}
        used: set[bytes] = set()
        locked: list[Path] = []
        for path in self.files():
            blob = _public_blob(path)
            if blob in by_blob:
                used.add(blob)
                self.offered.append(f"{path} (from ssh-agent)")
                yield InMemoryPrivateKey(user, by_blob[blob])
                continue
            try:
                key = _open(path)
            except (paramiko.SSHException, ValueError, OSError) as e:
                self.problems.append(f"{path} could not be read ({e})")
                continue
            if key is None:
                locked.append(path)
                continue
            used.add(key.asbytes())
            self.offered.append(str(path))
            yield InMemoryPrivateKey(user, key)
        if not self.resolved.identities_only:
            for agent_key in self.agent:
                if agent_key.asbytes() not in used:
                    self.offered.append(f"{agent_key.get_name()} key {agent_key.comment or ''} from ssh-agent".strip())
                    yield InMemoryPrivateKey(user, agent_key)
        for path in locked:
            password = self.passphrase.get(path)
            if password is None:
                self.locked.append(path)
                continue
            try:
                key = _open(path, password)
            except (paramiko.SSHException, ValueError) as e:
                self.problems.append(
                    f"the passphrase from {self.passphrase.origin or 'the prompt'} does not open {path} ({e})"
                )
                continue
            if key is None:
                self.locked.append(path)
                continue
            self.offered.append(str(path))
            yield InMemoryPrivateKey(user, key)


def locked_key_error(keys: list[Path], target: str) -> ConnectError:
    """The one paragraph for keys that need a passphrase nobody gave."""
    names = ", ".join(str(k) for k in keys)
    first = keys[0]
    return ConnectError(
        f"The key {names} (to log in to {target}) is protected by a passphrase and none was given, "
        "and no running ssh-agent holds it. Either load it into ssh-agent once "
        f"(eval $(ssh-agent); ssh-add {first}), or put the passphrase in an environment variable and name it "
        f"with --passphrase-env NAME (in a notebook: set {PASSPHRASE_ENV_VAR}=NAME before starting Jupyter), "
        "or run the command from a terminal to be asked for it."
    )
