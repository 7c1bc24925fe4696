"""Admin permissions and roles: what each operator may do over the admin API.

Why named permissions rather than roles checked in handlers: every admin route declares the one
permission it needs (``admin.guard.needs``), roles are only sets of permissions, and a custom role
in the YAML is just another set. A route that declares nothing is refused to everyone (deny by
default), and the role-matrix test walks every route against every role.

The built-in roles follow seed 000 section 7.2:

- ``developer``: read their own consumers' keys, budgets and audit records (``*_own``: the token
  or claim names the consumers; without any, nothing is theirs);
- ``admin``: developer, plus keys, secrets, limits and budgets management, reload, breakers,
  audit read (request records), admin tokens;
- ``security``: admin, plus blocks, emergency limits, anomalies, security configuration and every
  log class (security events included);
- ``compliance``: audit read of every class, export, verification and retention.

It lives with identity rather than in ``admin/`` because the config checks custom roles against
these names, and the config sits below the admin layer.

Issuing a token is bounded by the issuer's own role: nobody hands out a permission they lack
(``grants``), so an ``admin`` cannot mint a ``security`` token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

__all__ = ["BUILTIN_ROLES", "Permission", "RoleBook", "UnknownRole"]


class Permission(StrEnum):
    STATUS_READ = "status.read"
    METRICS_READ = "metrics.read"
    KEYS_READ_OWN = "keys.read_own"
    KEYS_READ = "keys.read"
    KEYS_WRITE = "keys.write"
    SECRETS_READ = "secrets.read"  # names, fingerprints, last use: never a value
    SECRETS_WRITE = "secrets.write"
    BUDGETS_READ_OWN = "budgets.read_own"
    BUDGETS_READ = "budgets.read"
    BUDGETS_WRITE = "budgets.write"
    LIMITS_WRITE = "limits.write"
    BREAKERS_READ = "breakers.read"
    BREAKERS_WRITE = "breakers.write"
    CONFIG_RELOAD = "config.reload"
    AUDIT_READ_OWN = "audit.read_own"
    AUDIT_READ = "audit.read"  # request records
    AUDIT_READ_SECURITY = "audit.read_security"  # every class, security events included
    AUDIT_EXPORT = "audit.export"
    AUDIT_VERIFY = "audit.verify"
    AUDIT_RETENTION = "audit.retention"
    BLOCKS_READ = "blocks.read"
    BLOCKS_WRITE = "blocks.write"
    EMERGENCY_WRITE = "emergency.write"
    ANOMALIES_READ = "anomalies.read"
    SECURITY_CONFIGURE = "security.configure"
    TOKENS_READ = "tokens.read"
    TOKENS_WRITE = "tokens.write"


_P = Permission
_DEVELOPER = frozenset({_P.STATUS_READ, _P.KEYS_READ_OWN, _P.BUDGETS_READ_OWN, _P.AUDIT_READ_OWN})
_ADMIN = _DEVELOPER | {
    _P.METRICS_READ, _P.KEYS_READ, _P.KEYS_WRITE, _P.SECRETS_READ, _P.SECRETS_WRITE, _P.BUDGETS_READ,
    _P.BUDGETS_WRITE, _P.LIMITS_WRITE, _P.BREAKERS_READ, _P.BREAKERS_WRITE, _P.CONFIG_RELOAD, _P.AUDIT_READ,
    _P.TOKENS_READ, _P.TOKENS_WRITE,
}
_SECURITY = _ADMIN | {
    _P.BLOCKS_READ, _P.BLOCKS_WRITE, _P.EMERGENCY_WRITE, _P.ANOMALIES_READ, _P.SECURITY_CONFIGURE,
    _P.AUDIT_READ_SECURITY,
}
_COMPLIANCE = frozenset({
    _P.STATUS_READ, _P.AUDIT_READ, _P.AUDIT_READ_SECURITY, _P.AUDIT_EXPORT, _P.AUDIT_VERIFY, _P.AUDIT_RETENTION,
})

BUILTIN_ROLES: Mapping[str, frozenset[Permission]] = {
    "developer": _DEVELOPER, "admin": _ADMIN, "security": _SECURITY, "compliance": _COMPLIANCE,
}


class UnknownRole(ValueError):
    """A token or claim names a role that is neither built in nor configured."""


class RoleBook:
    """The built-in roles and the config's custom ones (which may not redefine a built-in one)."""

    def __init__(self, custom: Mapping[str, Iterable[str]] | None = None) -> None:
        roles = dict(BUILTIN_ROLES)
        for name, permissions in (custom or {}).items():
            if name in BUILTIN_ROLES:
                raise ValueError(f"role {name!r} is built in and cannot be redefined")
            roles[name] = frozenset(Permission(p) for p in permissions)
        self._roles = roles

    @property
    def names(self) -> list[str]:
        return sorted(self._roles)

    def permissions(self, role: str) -> frozenset[Permission]:
        try:
            return self._roles[role]
        except KeyError:
            raise UnknownRole(role) from None

    def grants(self, issuer_role: str, role: str) -> bool:
        """Whether an operator of ``issuer_role`` may hand out ``role``: only a subset of their own."""
        return self.permissions(role) <= self.permissions(issuer_role)
