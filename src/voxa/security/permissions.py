"""Permissions, patient scopes and the built-in roles.

A role is a set of :class:`Permission` plus a :class:`PatientScope`: how far its users see
patients.  Permissions say *what* a user may do; the scope says *to whom*.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Permission(StrEnum):
    VIEW_STUDY_LIST = "view_study_list"
    VIEW_IMAGES = "view_images"
    DOWNLOAD = "download"  # download / export
    UPLOAD = "upload"  # upload / store
    DELETE = "delete"
    MODIFY = "modify"  # modify / anonymise
    RUN_ANALYSIS = "run_analysis"
    CREATE_REPORT = "create_report"
    SIGN_REPORT = "sign_report"
    VIEW_REPORT = "view_report"
    MANAGE_USERS = "manage_users"
    MANAGE_ROLES = "manage_roles"
    MANAGE_SETTINGS = "manage_settings"  # peers and settings
    VIEW_AUDIT = "view_audit"
    ASSIGN_PATIENTS = "assign_patients"
    TEACHING_VIEW = "teaching_view"  # de-identified teaching cases


ALL_PERMISSIONS: frozenset[Permission] = frozenset(Permission)


class PatientScope(StrEnum):
    """Which patients a role's users see."""

    ALL = "all"
    # Only patients assigned to the user, whose studies name the user as referring
    # physician, or covered by an active family grant.
    ASSIGNED = "assigned"
    # Only studies flagged as teaching cases, de-identified.
    TEACHING_ONLY = "teaching_only"


@dataclass(frozen=True)
class RoleSpec:
    name: str
    description: str
    permissions: frozenset[Permission]
    scope: PatientScope = PatientScope.ALL


P = Permission
_CLINICAL_VIEW = frozenset({P.VIEW_STUDY_LIST, P.VIEW_IMAGES, P.VIEW_REPORT})

DEFAULT_ROLES: dict[str, RoleSpec] = {
    spec.name: spec
    for spec in (
        RoleSpec("super_admin", "Everything, including signing reports.", ALL_PERMISSIONS),
        RoleSpec("admin", "Administers users, roles, peers and settings; does not sign reports.",
                 ALL_PERMISSIONS - {P.SIGN_REPORT}),
        RoleSpec("radiologist", "Reads, analyses, reports and signs.",
                 _CLINICAL_VIEW | {P.DOWNLOAD, P.UPLOAD, P.MODIFY, P.RUN_ANALYSIS, P.CREATE_REPORT,
                                   P.SIGN_REPORT, P.TEACHING_VIEW}),
        RoleSpec("technologist", "Acquires, stores and corrects studies; drafts no reports.",
                 _CLINICAL_VIEW | {P.UPLOAD, P.MODIFY, P.DOWNLOAD, P.RUN_ANALYSIS}),
        RoleSpec("referring_physician", "Sees the images and reports of their own patients.",
                 _CLINICAL_VIEW | {P.DOWNLOAD}, PatientScope.ASSIGNED),
        RoleSpec("student", "De-identified teaching cases only.", frozenset({P.TEACHING_VIEW}),
                 PatientScope.TEACHING_ONLY),
        RoleSpec("family_member", "One patient's signed reports and images, by verified grant.",
                 frozenset({P.VIEW_STUDY_LIST, P.VIEW_IMAGES, P.VIEW_REPORT}), PatientScope.ASSIGNED),
    )
}


def parse_permissions(values: Iterable[str] | str) -> frozenset[Permission]:
    """Permissions from values or a comma-separated string; unknown names raise ``ValueError``."""
    if isinstance(values, str):
        values = values.split(",")
    out: set[Permission] = set()
    for raw in values:
        v = raw.strip().lower().replace("-", "_")
        if not v:
            continue
        if v in ("*", "all"):
            out |= ALL_PERMISSIONS
            continue
        try:
            out.add(Permission(v))
        except ValueError:
            known = ", ".join(p.value for p in Permission)
            raise ValueError(f"unknown permission {raw.strip()!r} (known: {known})") from None
    return frozenset(out)


def format_permissions(perms: Iterable[Permission]) -> str:
    """The stored form: sorted, comma-separated."""
    return ",".join(sorted(p.value for p in perms))
