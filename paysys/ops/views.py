"""``/healthz/detail`` (JSON for staff or the metrics token), the admin overview and the trace page."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from notifications.selectors import attempt_outcomes, attempts_per_minute
from orders.selectors import orders_created_per_minute
from paysys.core.access import metrics_token_refusal
from paysys.core.admin_base import format_age
from paysys.ops import charts
from paysys.ops.health import Health, Reader, health, health_json
from paysys.ops.trace import trace
from paysys.reconcile.models import ReconcileReport
from paysys.reconcile.selectors import latest_report
from paysys.tcc.selectors import transactions_per_minute

OK, WAIT, BAD = "#2e7d32", "#f9a825", "#c62828"


@require_safe
@never_cache
def healthz_detail(request):
    """Every service's workers, database and oldest pending work, the broker and beat. It shows
    internals: staff (admin session) or ``Authorization: Bearer <METRICS_TOKEN>`` only."""
    if not (request.user.is_active and request.user.is_staff):
        refusal = metrics_token_refusal(request, realm="healthz")
        if refusal is not None:
            return refusal
    state = health()
    return JsonResponse(health_json(state), status=200 if state.ok else 503)


def changelist(name: str, **query) -> str:
    url = reverse(f"admin:{name}_changelist")
    return f"{url}?{urlencode(query)}" if query else url


def _age(state: Health, at) -> str:
    return format_age((state.at - at).total_seconds()) if at else ""


def _service_rows(state: Health) -> list[dict]:
    rows = []
    for s in state.services:
        rows.append(
            {
                "service": s.service,
                "database": s.database,
                "workers": [
                    {"queue": queue, "alive": live.alive, "last_seen": live.last_seen}
                    for queue, live in s.workers.items()
                ],
                "pending": [
                    (
                        w,
                        changelist(
                            "messaging_message",
                            service=w.alias,
                            queue=w.queue,
                            status__in="PREPARED,SENDING",
                        ),
                    )
                    for w in s.pending
                ],
                "pending_count": s.pending_count,
                "dead": [
                    (w, changelist("messaging_message", service=w.alias, queue=w.queue, dead="yes"))
                    for w in s.dead
                ],
                "dead_count": s.dead_count,
                "phase_two": s.phase_two,
                "phase_two_url": changelist(
                    "tcc_globaltransaction", status__in="CONFIRMING,CANCELLING"
                ),
                "oldest_age": _age(state, s.oldest_pending_at),
            }
        )
    return rows


def _report():
    report = Reader()("core", latest_report)
    if report is None:
        return None
    try:
        url = reverse("admin:reconcile_reconcilereport_change", args=[report.pk])
    except NoReverseMatch:  # no admin of the reports (yet)
        url = ""
    return {"report": report, "url": url}


def overview_view(request):
    """The operations overview: per service its workers, backlog, oldest pending age and DEAD
    messages; TCC needing a human; notification success; the latest reconcile; the last hour."""
    state = health()
    read = Reader()
    hour_ago = state.at - timedelta(hours=1)
    outcomes = read("notifications", lambda: attempt_outcomes(since=hour_ago), {})
    attempts = sum(outcomes.values())
    succeeded = outcomes.get("succeeded", 0)
    tcc = read("core", lambda: transactions_per_minute(now=state.at), {})
    notify = read("notifications", lambda: attempts_per_minute(now=state.at), {})
    created = read("orders", lambda: orders_created_per_minute(now=state.at), [])
    zero = [0] * 60
    context = {
        **admin.site.each_context(request),
        "title": "Operations overview",
        "state": state,
        "ok": state.ok,
        "rows": _service_rows(state),
        "beat": state.beat,
        "needs_human": state.tcc_needs_human,
        "needs_human_url": changelist("tcc_globaltransaction", needs_human__exact=1),
        "notifications": state.notifications,
        "notify_oldest_age": format_age(state.notifications["oldest_due_seconds"])
        if state.notifications
        else "",
        "notify_due_url": changelist("notifications_notification", status__exact="PENDING"),
        "notify_failed_url": changelist("notifications_notification", status__exact="FAILED"),
        "notify_rate": f"{100 * succeeded / attempts:.1f} %" if attempts else "no attempts",
        "notify_attempts": attempts,
        "notify_succeeded": succeeded,
        # the verdict only to who may read the reports
        "reconcile": _report()
        if request.user.has_perm(f"{ReconcileReport._meta.app_label}.view_reconcilereport")
        else None,
        "reconcile_hidden": not request.user.has_perm(
            f"{ReconcileReport._meta.app_label}.view_reconcilereport"
        ),
        "charts": [
            charts.stacked_bars([("created", "#1565c0", created or zero)], title="Orders created"),
            charts.stacked_bars(
                [
                    ("confirmed", OK, tcc.get("CONFIRMED", zero)),
                    (
                        "open",
                        WAIT,
                        [
                            sum(t)
                            for t in zip(
                                *(tcc.get(k, zero) for k in ("TRYING", "CONFIRMING", "CANCELLING")),
                                strict=False,
                            )
                        ],
                    ),
                    ("cancelled", BAD, tcc.get("CANCELLED", zero)),
                ],
                title="TCC transactions begun",
            ),
            charts.stacked_bars(
                [
                    ("succeeded", OK, notify.get("succeeded", zero)),
                    (
                        "failed",
                        BAD,
                        [
                            a + b
                            for a, b in zip(
                                notify.get("failed", zero),
                                notify.get("refused", zero),
                                strict=False,
                            )
                        ],
                    ),
                ],
                title="Merchant notify attempts",
            ),
        ],
        "problems": read.problems,
        "trace_url": reverse("admin-trace"),
    }
    return TemplateResponse(request, "admin/ops/overview.html", context)


def trace_view(request):
    """One payment across the services: orders, messages, TCC, vouchers, notifications of any
    merchant, so only staff who may view orders (``orders.view_order``) see it."""
    if not request.user.has_perm("orders.view_order"):
        raise PermissionDenied
    q = request.GET.get("q", "").strip()[:128]
    traces, problems = trace(q) if q else ([], [])
    context = {
        **admin.site.each_context(request),
        "title": "Trace a payment",
        "q": q,
        "traces": traces,
        "problems": problems,
        "overview_url": reverse("admin-overview"),
    }
    return TemplateResponse(request, "admin/ops/trace.html", context)
