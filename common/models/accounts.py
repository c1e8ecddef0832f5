"""Accounts and the audit trail.

A ``User`` belongs to exactly one tenant (municipality) and holds one or more roles.
Operators are tied to their softphone (PJSIP endpoint and extension), staff to their
department extension. Passwords are argon2 hashes; the TOTP secret is only set once
enrolment has been confirmed with a valid code.

An ``AuditEntry`` says who did what to which object, when, from where, and with what
outcome -- never the data itself (no names, numbers, notes or search terms of
citizens). ``reason`` is a short code (``bad_password``, ``role``, ``tenant``...).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from common.db import Base, UTCDateTime

#: Every role, in the order the UI lists them.
ROLES = ("operator", "staff", "supervisor", "administrator", "approver")
OPERATOR = "operator"
STAFF = "staff"
SUPERVISOR = "supervisor"
ADMINISTRATOR = "administrator"
APPROVER = "approver"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    # Operators: PJSIP endpoint of the softphone (op01) and its extension (1001).
    sip_endpoint: Mapped[str | None] = mapped_column(String(64), index=True)
    # Operators and staff: the extension that rings for them.
    extension: Mapped[str | None] = mapped_column(String(32), index=True)
    # Staff: their department (settings.departments[].id).
    department_id: Mapped[str | None] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    # Last accepted TOTP time step: a code is never accepted twice.
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    role_rows: Mapped[list[UserRole]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin",
        order_by="UserRole.role")

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(r.role for r in self.role_rows)

    def set_roles(self, roles: set[str] | frozenset[str]) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles: {sorted(unknown)}")
        keep = [r for r in self.role_rows if r.role in roles]
        have = {r.role for r in keep}
        self.role_rows = keep + [UserRole(role=r) for r in ROLES if r in roles and r not in have]

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))

    @property
    def totp_enabled(self) -> bool:
        return bool(self.totp_secret)

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    role: Mapped[str] = mapped_column(String(32), primary_key=True)

    user: Mapped[User] = relationship(back_populates="role_rows")


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_tenant_at", "tenant_id", "at"),
        Index("ix_audit_entries_object", "object_type", "object_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Who: the account (id and login name at the time), or a process ("ari_app").
    actor_id: Mapped[int | None] = mapped_column(Integer, index=True)
    actor: Mapped[str] = mapped_column(String(64), default="")
    tenant_id: Mapped[str] = mapped_column(String(64), default="")
    # What: dotted verb such as "auth.login", "case.view", "user.update", "access.denied".
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str] = mapped_column(String(32), default="")
    object_id: Mapped[str] = mapped_column(String(64), default="")
    # From where: client address (web) or process name (others).
    remote_addr: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(16), default="web")
    # ok | denied | failed
    outcome: Mapped[str] = mapped_column(String(16), default="ok", index=True)
    reason: Mapped[str] = mapped_column(String(64), default="")
