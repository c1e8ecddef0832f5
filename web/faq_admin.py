"""Pages of the FAQ and manual base: editors draft, the city approves (M3, spec 12(1)-(3)).

Every page calls ``faq.services`` / ``faq.transfer`` with an ``Actor`` built from the
signed-in user; the library checks roles, tenants and the item version itself, and its
Japanese error messages are shown as they are. This module adds the web checks on top:
the route's roles (``login_required``), other tenants' items answer 404 (audited), and
nothing here is reachable by operators, staff or anonymous users.

The routes live here; reading the list's filters and the item form is
``web.faq_forms``, showing an item (its rich text, diffs, labels) ``web.faq_display``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from rq import Queue
from werkzeug.wrappers import Response as WerkzeugResponse

from common.models.accounts import ADMINISTRATOR, APPROVER, SUPERVISOR, User
from common.models.faq import FaqItem, FaqRevision
from faq import jobs, services, store, transfer
from faq.content import CHANNELS, MANUAL_TYPES, PUBLISHING_ROLES, Actor, Content
from faq.exceptions import FaqError, ImportFailed, NoSuchItem
from web.access import audit_event, current_user, deny, login_required
from web.db import get_db, get_keys, get_redis, get_settings
from web.faq_display import (
    action_labels,
    channel_labels,
    diff_lines,
    kind_labels,
    manual_type_labels,
    render_body,
    status_labels,
)
from web.faq_forms import (
    KINDS,
    REASON_MAX,
    STATUSES,
    bad_text,
    form_content,
    form_values,
    list_filters,
    matches_filters,
    posted_version,
)
from web.forms import field
from web.views import register_nav

bp = Blueprint("faq_admin", __name__, url_prefix="/faq-admin")

EDIT_ROLES = frozenset({SUPERVISOR, ADMINISTRATOR})
"""Draft, revise, submit, request withdrawal, discard, import (the library also knows
``editor``, which the web accounts do not have)."""
APPROVE_ROLES = frozenset({APPROVER})
"""The city: approve, return, acknowledge changes it did not request."""
READ_ROLES = EDIT_ROLES | APPROVE_ROLES
"""See unpublished text: lists, items, history, the approval queue, the report list."""
PUBLISH_ROLES = frozenset(PUBLISHING_ROLES) & READ_ROLES

BLANK_SECTIONS = 2
UPLOAD_MAX = 1024 * 1024

Reply = str | tuple[str, int] | Response | WerkzeugResponse

register_nav("faq_admin.index", _l("FAQ and manuals"), READ_ROLES, order=50)
register_nav("faq_admin.queue", _l("Approvals"), APPROVE_ROLES, order=51)


# ------------------------------------------------------------------- helpers


def _me() -> User:
    user = current_user()
    assert user is not None  # nosec B101 # login_required ran
    return user


def _has(roles: frozenset[str]) -> bool:
    user = current_user()
    return user is not None and bool(user.roles & roles)


def _labels() -> dict[str, Any]:
    return {"status_labels": status_labels(), "action_labels": action_labels(),
            "channel_labels": channel_labels(), "manual_type_labels": manual_type_labels(),
            "kind_labels": kind_labels(), "render_body": render_body,
            "diff_lines": diff_lines, "can_edit": _has(EDIT_ROLES),
            "can_approve": _has(APPROVE_ROLES), "can_publish": _has(PUBLISH_ROLES)}


def faq_actor(user: User | None = None) -> Actor:
    """The library's actor for a web user (the log-in name is the author in the history)."""
    user = user or _me()
    return Actor(user_id=user.username, roles=frozenset(user.roles), tenant=user.tenant_id)


def _own_item(item_id: int) -> FaqItem:
    """The item row, or 404 for a missing item and (audited) for another tenant's."""
    item = get_db().get(FaqItem, item_id)
    if item is None:
        deny("missing", object_type="faq_item", object_id=item_id, status=404)
    assert item is not None  # nosec B101 # deny() raised otherwise
    if item.tenant_id is not None and item.tenant_id != _me().tenant_id:
        deny("tenant", object_type="faq_item", object_id=item_id, status=404)
    return item


def _after_commit(events: tuple[Any, ...]) -> str | None:
    client = get_redis()
    return jobs.after_commit(client, get_keys(), events,
                             Queue(jobs.QUEUE, connection=client))


def index_status() -> dict[str, Any]:
    """The search index generation operators search now and when it was built."""
    client = get_redis()
    prefix = get_settings().redis.prefix
    generation = store.current_generation(client, prefix)
    built_at = None
    if generation:
        raw = client.hget(store.IndexKeys(prefix).generation(generation), "built_at")
        if isinstance(raw, bytes):
            try:
                built_at = datetime.fromisoformat(raw.decode())
            except ValueError:
                built_at = None
    pending = Queue(jobs.QUEUE, connection=client).count
    return {"generation": generation, "built_at": built_at, "queued": pending}


# ------------------------------------------------------------------- list


@bp.get("/")
@login_required(roles=READ_ROLES)
def index() -> Reply:
    filters, errors = list_filters()
    items = services.list_items(get_db(), faq_actor(), status=filters.status or None,
                                kind=filters.kind or None)
    shown = [v for v in items if matches_filters(v, filters)]
    return render_template("faq_admin/list.html", items=shown, total=len(items),
                           filters=filters, errors=errors, statuses=STATUSES,
                           channels=CHANNELS, kinds=KINDS, index=index_status(),
                           **_labels()), 400 if errors else 200


# ------------------------------------------------------------------- create / edit


def _render_form(kind: str, raw: dict[str, Any], errors: dict[str, str], *,
                 item: services.ItemView | None = None, status: int = 200,
                 shared: bool = False) -> tuple[str, int]:
    slots = list(raw.get("sections") or []) + [("", "")] * BLANK_SECTIONS
    return render_template("faq_admin/form.html", kind=kind, raw=raw, errors=errors,
                           item=item, slots=slots, channels=CHANNELS,
                           manual_types=MANUAL_TYPES, shared=shared,
                           may_share=_has(frozenset({ADMINISTRATOR})),
                           **_labels()), status


@bp.route("/new", methods=["GET", "POST"])
@login_required(roles=EDIT_ROLES)
def new() -> Reply:
    kind = request.values.get("kind", "faq")
    if kind not in KINDS:
        kind = "faq"
    if request.method == "GET":
        raw = form_values(Content(title="", manual_type="operation" if kind == "manual" else ""))
        raw["reason"] = ""
        return _render_form(kind, raw, {})
    content, raw, errors = form_content(kind)
    shared = request.form.get("shared") == "1"
    if content is None:
        return _render_form(kind, raw, errors, status=400, shared=shared)
    db = get_db()
    try:
        change = services.create_item(db, faq_actor(), content, kind=kind,
                                      tenant=None if shared else "", reason=raw["reason"],
                                      requested_by_city=raw["requested_by_city"])
        db.commit()
    except FaqError as exc:
        db.rollback()
        errors["form"] = exc.message
        return _render_form(kind, raw, errors, status=exc.status_code, shared=shared)
    _after_commit(change.events)
    audit_event("faq.create", object_type="faq_item", object_id=change.item.id)
    flash(_("Saved as a draft. Submit it for approval when it is ready."), "success")
    return redirect(url_for("faq_admin.item", item_id=change.item.id), 303)


@bp.route("/<int:item_id>/edit", methods=["GET", "POST"])
@login_required(roles=EDIT_ROLES)
def edit(item_id: int) -> Reply:
    _own_item(item_id)
    db = get_db()
    view = services.get_item(db, faq_actor(), item_id)
    if request.method == "GET":
        return _render_form(view.kind, form_values(view.head.content), {}, item=view)
    content, raw, errors = form_content(view.kind)
    version = posted_version()
    if version is None:
        errors["form"] = _("The form is incomplete. Reload the page and try again.")
    if content is None or version is None:
        return _render_form(view.kind, raw, errors, item=view, status=400)
    try:
        change = services.revise(db, faq_actor(), item_id, content, expected_version=version,
                                 reason=raw["reason"],
                                 requested_by_city=raw["requested_by_city"])
        db.commit()
    except FaqError as exc:
        db.rollback()
        errors["form"] = exc.message
        return _render_form(view.kind, raw, errors, item=view, status=exc.status_code)
    _after_commit(change.events)
    audit_event("faq.revise", object_type="faq_item", object_id=item_id)
    flash(_("Saved as a draft. Submit it for approval when it is ready."), "success")
    return redirect(url_for("faq_admin.item", item_id=item_id), 303)


# ------------------------------------------------------------------- one item


def _render_item(item_id: int, *, error: str = "", status: int = 200) -> tuple[str, int]:
    db = get_db()
    actor = faq_actor()
    view = services.get_item(db, actor, item_id)
    revisions = list(reversed(services.history(db, actor, item_id)))
    published = next((r for r in revisions if r.id == view.published_revision_id), None)
    return render_template("faq_admin/item.html", item=view, revisions=revisions,
                           published=published, error=error, me=actor.user_id,
                           **_labels()), status


@bp.get("/<int:item_id>")
@login_required(roles=READ_ROLES)
def item(item_id: int) -> Reply:
    _own_item(item_id)
    return _render_item(item_id)


def _transition(item_id: int, action: str, roles: frozenset[str]) -> Reply:
    """Run one workflow step posted from the item page (or the approval queue)."""
    _own_item(item_id)
    if not _has(roles):
        deny("role", object_type="faq_item", object_id=item_id)
    version = posted_version()
    comment = field("comment", REASON_MAX)
    if version is None:
        return _render_item(item_id, status=400, error=_(
            "The form is incomplete. Reload the page and try again."))
    if len(comment) > REASON_MAX:
        return _render_item(item_id, status=400, error=_(
            "The comment can be at most %(n)d characters.", n=REASON_MAX))
    if bad_text(comment):
        return _render_item(item_id, status=400, error=_("Remove the control characters."))
    db = get_db()
    actor = faq_actor()
    done: list[str] = []
    try:
        if action == "submit":
            change = services.submit(db, actor, item_id, expected_version=version,
                                     comment=comment)
        elif action == "withdraw":
            change = services.request_withdrawal(
                db, actor, item_id, expected_version=version, reason=comment,
                requested_by_city=request.form.get("requested_by_city") == "1")
        elif action == "discard":
            change = services.discard_draft(db, actor, item_id, expected_version=version)
        elif action == "approve":
            change = services.approve(db, actor, item_id, expected_version=version,
                                      comment=comment)
            if request.form.get("publish") == "1":
                done.append("approve")
                change = services.publish(db, actor, item_id,
                                          expected_version=change.item.version)
                action = "publish"
        elif action == "return":
            change = services.return_for_changes(db, actor, item_id,
                                                 expected_version=version, comment=comment)
        else:  # publish
            change = services.publish(db, actor, item_id, expected_version=version)
        db.commit()
    except FaqError as exc:
        db.rollback()
        if isinstance(exc, NoSuchItem):
            deny("missing", object_type="faq_item", object_id=item_id, status=404)
        audit_event(f"faq.{action}", object_type="faq_item", object_id=item_id,
                    outcome="failed", reason=exc.error_id)
        return _render_item(item_id, error=exc.message, status=exc.status_code)
    all_events = change.events
    job_id = _after_commit(all_events)
    for step in [*done, action]:
        audit_event(f"faq.{step}", object_type="faq_item", object_id=item_id)
    messages = {
        "submit": _("Submitted for approval."),
        "withdraw": _("Withdrawal drafted. Submit it for approval to take the item off the "
                      "air."),
        "discard": _("The draft was discarded."),
        "approve": _("Approved. It is shown once it is published."),
        "return": _("Returned with your comment."),
        "publish": _("Published. The search index is being rebuilt."),
    }
    flash(messages[action], "success")
    if job_id is None and action == "publish":
        flash(_("The search index could not be queued for rebuilding."), "warning")
    if request.form.get("next") == "queue":
        return redirect(url_for("faq_admin.queue"), 303)
    return redirect(url_for("faq_admin.item", item_id=item_id), 303)


@bp.post("/<int:item_id>/submit")
@login_required(roles=EDIT_ROLES)
def submit(item_id: int) -> Reply:
    return _transition(item_id, "submit", EDIT_ROLES)


@bp.post("/<int:item_id>/withdraw")
@login_required(roles=EDIT_ROLES)
def withdraw(item_id: int) -> Reply:
    return _transition(item_id, "withdraw", EDIT_ROLES)


@bp.post("/<int:item_id>/discard")
@login_required(roles=EDIT_ROLES)
def discard(item_id: int) -> Reply:
    return _transition(item_id, "discard", EDIT_ROLES)


@bp.post("/<int:item_id>/approve")
@login_required(roles=APPROVE_ROLES)
def approve(item_id: int) -> Reply:
    return _transition(item_id, "approve", APPROVE_ROLES)


@bp.post("/<int:item_id>/return")
@login_required(roles=APPROVE_ROLES)
def return_(item_id: int) -> Reply:
    return _transition(item_id, "return", APPROVE_ROLES)


@bp.post("/<int:item_id>/publish")
@login_required(roles=PUBLISH_ROLES)
def publish(item_id: int) -> Reply:
    return _transition(item_id, "publish", PUBLISH_ROLES)


# ------------------------------------------------------------------- approvals


@bp.get("/queue")
@login_required(roles=READ_ROLES)
def queue() -> Reply:
    db = get_db()
    actor = faq_actor()
    waiting = services.list_items(db, actor, status="submitted")
    approved = services.list_items(db, actor, status="approved")
    return render_template("faq_admin/queue.html", waiting=waiting, approved=approved,
                           me=actor.user_id, **_labels())


@bp.get("/reports")
@login_required(roles=READ_ROLES)
def reports() -> Reply:
    changes = services.changes_to_report(get_db(), faq_actor())
    return render_template("faq_admin/reports.html", changes=changes, **_labels())


@bp.post("/reports/<int:revision_id>/acknowledge")
@login_required(roles=APPROVE_ROLES)
def acknowledge(revision_id: int) -> Reply:
    db = get_db()
    rev = db.get(FaqRevision, revision_id)
    if rev is None:
        deny("missing", object_type="faq_revision", object_id=revision_id, status=404)
    assert rev is not None  # nosec B101 # deny() raised otherwise
    _own_item(rev.item_id)
    comment = field("comment", REASON_MAX)
    if len(comment) > REASON_MAX or bad_text(comment):
        flash(_("The comment can be at most %(n)d characters.", n=REASON_MAX) + " "
              + _("Remove the control characters."), "error")
        return redirect(url_for("faq_admin.reports"), 303)
    try:
        change = services.acknowledge(db, faq_actor(), revision_id, comment)
        db.commit()
    except FaqError as exc:
        db.rollback()
        flash(exc.message, "error")
        return redirect(url_for("faq_admin.reports"), 303)
    _after_commit(change.events)
    audit_event("faq.acknowledge", object_type="faq_revision", object_id=revision_id)
    flash(_("Acknowledged."), "success")
    return redirect(url_for("faq_admin.reports"), 303)


# ------------------------------------------------------------------- import / export


@bp.get("/export")
@login_required(roles=READ_ROLES)
def export() -> Reply:
    fmt = request.args.get("format", "csv")
    scope = request.args.get("scope", "published")
    if fmt not in ("csv", "xlsx") or scope not in ("published", "working"):
        flash(_("Choose a value from the list."), "error")
        return redirect(url_for("faq_admin.transfer_page"), 303)
    actor = faq_actor()
    if fmt == "csv":
        data = transfer.export_csv(get_db(), actor, scope=scope)
        mime = "text/csv; charset=utf-8"
    else:
        data = transfer.export_xlsx(get_db(), actor, scope=scope)
        mime = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    audit_event("faq.export", object_type="faq_export", object_id=f"{scope}.{fmt}")
    name = f"faq-{scope}.{fmt}"
    return Response(data, mimetype=mime,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _render_transfer(errors: list[str] | None = None, status: int = 200,
                     message: str = "") -> tuple[str, int]:
    return render_template("faq_admin/transfer.html", import_errors=errors or [],
                           message=message, columns=transfer.column_help(),
                           **_labels()), status


@bp.get("/transfer")
@login_required(roles=READ_ROLES)
def transfer_page() -> Reply:
    return _render_transfer()


@bp.post("/import")
@login_required(roles=EDIT_ROLES)
def import_file() -> Reply:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _render_transfer([_("Choose a CSV or Excel file.")], 400)
    name = upload.filename.lower()
    data = upload.stream.read(UPLOAD_MAX + 1)
    if len(data) > UPLOAD_MAX:
        return _render_transfer([_("The file is too large (at most 1 MB).")], 400)
    requested = request.form.get("requested_by_city") == "1"
    db = get_db()
    actor = faq_actor()
    try:
        if name.endswith(".xlsx"):
            result = transfer.import_xlsx(db, actor, data, requested_by_city=requested)
        elif name.endswith((".csv", ".txt")):
            result = transfer.import_csv(db, actor, data, requested_by_city=requested)
        else:
            return _render_transfer([_("Choose a CSV or Excel file.")], 400)
        db.commit()
    except ImportFailed as exc:
        db.rollback()
        audit_event("faq.import", object_type="faq_import", outcome="failed",
                    reason=exc.error_id)
        lines = [f"{line}行目" + (f"（{col}）" if col else "") + f": {reason}"
                 for line, col, reason in exc.errors]
        return _render_transfer(lines, 422)
    except FaqError as exc:
        db.rollback()
        audit_event("faq.import", object_type="faq_import", outcome="failed",
                    reason=exc.error_id)
        return _render_transfer([exc.message], exc.status_code)
    _after_commit(result.events)
    audit_event("faq.import", object_type="faq_import",
                object_id=f"{len(result.created)}+{len(result.revised)}")
    message = _("Imported as drafts: %(new)d new, %(changed)d changed, %(same)d unchanged.",
                new=len(result.created), changed=len(result.revised),
                same=len(result.unchanged))
    return _render_transfer(message=message)

