"""Roles and the permission matrix: the single source of truth for who may do what.

Every route declares one permission; `deps.require(permission)` enforces it through `allowed()`.
docs/security.md carries the table `matrix_markdown()` renders (a test keeps the two identical).
"""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    """Ordered: each role can do everything the roles below it can."""

    VIEWER = 1
    OPERATOR = 2
    APPROVER = 3
    ADMIN = 4
    PLATFORM_ADMIN = 5

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, name: str) -> Role | None:
        return _BY_LABEL.get(name.strip().lower()) if isinstance(name, str) else None


_BY_LABEL = {r.label: r for r in Role}

TENANT_ROLES: tuple[Role, ...] = (Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN)

#: permission -> (lowest role holding it, what it covers). Platform admins hold every permission on every
#: tenant; tenant roles only ever act on their own tenant.
PERMISSIONS: dict[str, tuple[Role, str]] = {
    "self.read": (Role.VIEWER, "See the calling credential (tenant, role)"),
    "tenant.read": (Role.VIEWER, "Read the tenant and its effective limits"),
    "exceptions.read": (Role.VIEWER, "List and read exceptions, their events, evidence and audit entries"),
    "intake.read": (Role.VIEWER, "Read the state of an accepted submission (dead-letter reason included)"),
    "metrics.read": (Role.VIEWER, "Read the tenant's KPIs"),
    "approvals.read": (Role.VIEWER, "List and read approval requests (plan, evidence, votes)"),
    "tools.read": (Role.VIEWER, "Read the state of the tenant's tool circuit breakers"),
    "exceptions.submit": (Role.OPERATOR, "Submit exceptions (also ?wait=true)"),
    "exceptions.act": (Role.OPERATOR, "Assign, comment, close and reopen exceptions"),
    "run.what-if": (Role.OPERATOR, "Dry-run exceptions against named pack versions (writes nothing)"),
    "exceptions.override": (Role.APPROVER, "Override an exception's severity (a learning signal)"),
    "approvals.decide": (Role.APPROVER, "Approve (optionally with edited arguments) or reject approval requests"),
    "packs.manage": (Role.ADMIN, "Publish, validate, list, read, activate, roll back, diff and test packs"),
    "apikeys.manage": (Role.ADMIN, "Create, list and revoke the tenant's API keys"),
    "audit.read": (Role.ADMIN, "Read and verify the tenant's audit chain and failed authentications"),
    "tenants.manage": (Role.PLATFORM_ADMIN, "Create and list tenants, set their limits"),
    "platform.audit": (Role.PLATFORM_ADMIN, "Read failed authentications across tenants"),
}

#: Human actions on an exception, each checked against its own permission by the actions route.
ACTION_PERMISSIONS: dict[str, str] = {
    "assign": "exceptions.act",
    "comment": "exceptions.act",
    "close": "exceptions.act",
    "reopen": "exceptions.act",
    "override_severity": "exceptions.override",
}


def min_role(permission: str) -> Role:
    return PERMISSIONS[permission][0]


def allowed(role: Role, permission: str) -> bool:
    """The one authorization rule: a role holds a permission when it ranks at least the permission's role."""
    return role >= PERMISSIONS[permission][0]


def matrix_markdown() -> str:
    """The permission-by-role table for docs/security.md."""
    roles = list(Role)
    head = "| permission | " + " | ".join(r.label for r in roles) + " | covers |"
    sep = "|---|" + "|".join(":-:" for _ in roles) + "|---|"
    rows = [
        f"| `{perm}` | " + " | ".join("✓" if allowed(r, perm) else "—" for r in roles) + f" | {text} |"
        for perm, (_, text) in PERMISSIONS.items()
    ]
    return "\n".join([head, sep, *rows])


def actions_markdown() -> str:
    """Which permission each human action on an exception needs."""
    rows = [f"| `{action}` | `{perm}` | {min_role(perm).label} |" for action, perm in ACTION_PERMISSIONS.items()]
    return "\n".join(["| action | permission | lowest role |", "|---|---|---|", *rows])
