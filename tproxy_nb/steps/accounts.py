"""The envoy and service accounts: pure planners from :class:`~tproxy_nb.steps.facts.Accounts`.

iptables matches on the accounts' ids, so an account is created with exactly the configured
uid/gid, and someone else's account is never repurposed: a taken id or an existing account with
other ids is a :class:`StepError` raised before anything changes.

Example::

    plan_account(facts.accounts(host), settings.envoy, "envoy").apply(host)
"""

from __future__ import annotations

from ..errors import StepError
from ..marks import ACCOUNT_MARK
from ..settings import Account, Settings
from .facts import Accounts
from .plan import Plan, Run


def plan_account(acc: Accounts, acct: Account, role: str, where: str = "the host") -> Plan:
    """Group and user with the configured ids; refuse to repurpose someone else's account.

    acc: the host's accounts (:func:`tproxy_nb.steps.facts.accounts`).
    acct: the wanted account.
    role: ``envoy`` or ``service`` (its settings key).
    where: the host's name, for messages.

    Example: ``plan_account(parse_accounts(text), Settings().envoy, "envoy").empty``.
    """
    plan = Plan(f"{role} account")
    group, by_gid = acc.group(acct.group), acc.group(acct.gid)
    if group is None:
        if by_gid is not None:
            raise StepError(
                f"gid {acct.gid} already belongs to group {by_gid.name!r} on {where}; choose another "
                f"{role}.gid in the settings. Nothing was changed."
            )
        plan.add(f"create group {acct.group} (gid {acct.gid})", Run(("groupadd", "-g", str(acct.gid), acct.group)))
    elif group.gid != acct.gid:
        raise StepError(
            f"Group {acct.group} exists on {where} with gid {group.gid}, the settings want {acct.gid}. "
            f"Change {role}.gid to {group.gid} or remove the group. Nothing was changed."
        )
    else:
        plan.note(f"group {acct.group} exists (gid {acct.gid})")
    user, by_uid = acc.user(acct.user), acc.user(acct.uid)
    if user is None:
        if by_uid is not None:
            raise StepError(
                f"uid {acct.uid} already belongs to user {by_uid.name!r} on {where}; choose another "
                f"{role}.uid in the settings. Nothing was changed."
            )
        plan.add(
            f"create user {acct.user} (uid {acct.uid}, group {acct.group}, no login)",
            Run(
                (
                    "useradd",
                    "--system",
                    "-u",
                    str(acct.uid),
                    "-g",
                    acct.group,
                    "-M",
                    "-d",
                    "/nonexistent",
                    "-s",
                    "/usr/sbin/nologin",
                    "-c",
                    f"{ACCOUNT_MARK} {role}",
                    acct.user,
                )
            ),
        )
    elif (user.uid, user.gid) != (acct.uid, acct.gid):
        raise StepError(
            f"User {acct.user} exists on {where} with uid {user.uid} gid {user.gid}, the settings want "
            f"{acct.uid}/{acct.gid}. iptables matches on these ids: fix the settings or the account. "
            "Nothing was changed."
        )
    else:
        plan.note(f"user {acct.user} exists (uid {acct.uid})")
    return plan


def plan_remove(acc: Accounts, settings: Settings) -> Plan:
    """Remove the envoy and service accounts, but only those we made (their comment starts with our mark).

    A group goes only when it is the user's own primary group and nobody else is in it or uses it.

    Example: ``plan_remove(facts.accounts(host), settings).apply(host)``.
    """
    plan = Plan("accounts")
    for acct in (settings.envoy, settings.service):
        user = acc.user(acct.user)
        if not (user and user.gecos.startswith(ACCOUNT_MARK)):
            continue
        plan.add(f"remove user {acct.user}", Run(("userdel", acct.user)))
        group = acc.group(user.gid)
        others = [u for u in acc.users if u.gid == user.gid and u.name != acct.user]
        if group and not group.members and not others:
            # userdel may already have removed a group named like the user (USERGROUPS_ENAB): exit 6 is fine.
            plan.add(f"remove group {group.name}", Run(("groupdel", group.name), ok_codes=(0, 6)))
    if plan.empty:
        plan.note("no tproxy-nb accounts")
    return plan
