"""One family of errors, each with a message that says what to do.

Every error the package raises on purpose derives from :class:`TproxyError`;
the CLI prints its message as one paragraph and exits 2 (bad input or target).
"""

from __future__ import annotations


class TproxyError(Exception):
    """Base class: a problem the user can fix, with a message saying how."""


class ConnectError(TproxyError):
    """The SSH target could not be reached or refused us."""


class HostKeyError(ConnectError):
    """The target's host key is unknown or changed; never accepted silently."""

    def __init__(self, message: str, *, hostname: str, port: int, key_type: str, fingerprint: str, public_key: str):
        super().__init__(message)
        self.hostname = hostname
        self.port = port
        self.key_type = key_type
        self.fingerprint = fingerprint
        self.public_key = public_key


class CommandError(TproxyError):
    """A remote command exited non-zero; carries its :class:`Result`."""

    def __init__(self, result, hint: str = ""):
        self.result = result
        tail = result.tail(5, stream="stderr") or result.tail(5)
        msg = f"Command failed with exit code {result.exit_code} on {result.host}: {result.display_cmd}"
        if tail:
            msg += "\n" + "\n".join("  | " + line for line in tail.splitlines())
        if hint:
            msg += "\n" + hint
        super().__init__(msg)


class CommandTimeout(CommandError):
    """A remote command ran longer than its timeout and was abandoned."""

    def __init__(self, result, timeout: float):
        self.timeout = timeout
        super().__init__(result, hint=f"It did not finish within {timeout:g} s; raise timeout= if that is expected.")
        self.args = (f"Command timed out after {timeout:g} s on {result.host}: {result.display_cmd}",)


class SettingsError(TproxyError):
    """The settings file is malformed or holds a bad value (raised before any remote call)."""


class LabError(TproxyError):
    """The local lab could not be built, checked or removed."""


class StepError(TproxyError):
    """A provisioning, firewall or Envoy step could not do its job on the target."""
