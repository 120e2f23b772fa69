"""Plans: what a step would change on a host, as data, before it changes it.

A step reads the current state (read-only commands), compares it with what is
wanted and returns a :class:`Plan`: a list of :class:`Change` (each a sentence
and the commands that make it) plus notes on what is already right. Applying a
plan runs its commands; an empty plan means the step is done (idempotent).

Example::

    plan = provision.plan_users(host, settings)
    print(plan)            # dry run
    plan.apply(host)       # make it so
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Callable

from ..remote.host import Command, Host, mask_secrets, to_shell


@dataclass
class Change:
    """One change: a sentence for people and the commands (run with sudo) that make it.

    action: optional callable ``action(host)`` run instead of ``commands`` (e.g. an upload).
    """

    description: str
    commands: list[Command] = field(default_factory=list)
    action: Callable[[Host], object] | None = None

    def shell(self) -> list[str]:
        return [mask_secrets(to_shell(c)) for c in self.commands]


@dataclass
class Plan:
    """What a step would do; empty when everything is already in place."""

    step: str
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def add(self, description: str, *commands: Command, action: Callable[[Host], object] | None = None) -> None:
        self.changes.append(Change(description, list(commands), action))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def apply(self, host: Host, timeout: float = 300) -> "Plan":
        """Run every change in order (as root); return self for chaining."""
        for change in self.changes:
            if change.action is not None:
                change.action(host)
            for cmd in change.commands:
                host.run(cmd, sudo=True, timeout=timeout)
        return self

    def lines(self) -> list[str]:
        out = [f"{self.step}: " + ("nothing to change" if self.empty else f"{len(self.changes)} change(s)")]
        for c in self.changes:
            out.append(f"  + {c.description}")
            out.extend(f"      $ {s}" for s in c.shell())
        out.extend(f"  = {n}" for n in self.notes)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        items = "".join(
            f"<li>{html.escape(c.description)}" + "".join(f"<br><code>$ {html.escape(s)}</code>" for s in c.shell()) + "</li>"
            for c in self.changes
        )
        notes = "".join(f"<li style='color:#555'>✓ {html.escape(n)}</li>" for n in self.notes)
        head = "nothing to change" if self.empty else f"{len(self.changes)} change(s)"
        return f"<b>{html.escape(self.step)}</b>: {head}<ul>{items}{notes}</ul>"

    def to_dict(self) -> dict:
        return {"step": self.step, "changes": [{"description": c.description, "commands": c.shell()} for c in self.changes], "notes": self.notes}
