"""Who may do what: roles, the permissions each holds, and the tenant's own state.

Permissions are named, and a role is the set it holds; the server asks ``allows`` in one
place (``server.auth.require``) for every route, so a route's permission is data that a
test can read off the route table.
"""

from __future__ import annotations

from enum import StrEnum

from corral.model.errors import PermissionDenied


class Role(StrEnum):
    VIEWER = "viewer"  # reads the tenant's jobs
    MEMBER = "member"  # and submits and cancels them
    ADMIN = "admin"  # and runs the tenant's workers, keys and audit
    OPERATOR = "operator"  # and onboards, lists and suspends tenants: across tenants


class Permission(StrEnum):
    JOBS_READ = "jobs.read"
    JOBS_SUBMIT = "jobs.submit"
    WORKERS_ADMIN = "workers.admin"
    KEYS_ADMIN = "keys.admin"
    AUDIT_READ = "audit.read"
    TENANTS_ADMIN = "tenants.admin"


_VIEWER = frozenset({Permission.JOBS_READ})
_MEMBER = _VIEWER | {Permission.JOBS_SUBMIT}
_ADMIN = _MEMBER | {Permission.WORKERS_ADMIN, Permission.KEYS_ADMIN, Permission.AUDIT_READ}
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.MEMBER: _MEMBER,
    Role.ADMIN: _ADMIN,
    Role.OPERATOR: _ADMIN | {Permission.TENANTS_ADMIN},
}
# Each role holds what the one before it holds, and more: so "at least" is a rank.
ROLE_RANK = {role: len(held) for role, held in PERMISSIONS.items()}


def allows(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]


def check_grant(granter: Role, role: Role) -> None:
    """A key can make, rotate or revoke only keys of a role it holds itself or below."""
    if ROLE_RANK[role] > ROLE_RANK[granter]:
        raise PermissionDenied(f"a {granter} key cannot manage {role} keys", field="role")


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"  # its keys are refused and its workers cannot register
