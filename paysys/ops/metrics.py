"""The platform's ``GET /metrics``: every service's and framework's Prometheus collectors in one
text exposition. Each module provides only its own figures (paysys/messaging/metrics.py,
paysys/tcc/metrics.py, notifications/metrics.py); putting them together is operations' job.

Each scrape registers the collectors in a fresh registry: no process-global state, so every web
process answers the same numbers, read from the databases at scrape time. It answers only
``Authorization: Bearer <METRICS_TOKEN>`` (Prometheus' ``bearer_token``), and is off (404) while
no token is set.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from notifications.metrics import NotificationCollector
from paysys.core.access import metrics_token_refusal
from paysys.messaging.metrics import OutboxCollector
from paysys.tcc.metrics import TccCollector

# in the order of the exposition (the outbox's families first: paysys_database_up says which
# database did not answer, for every collector after it)
COLLECTORS = (OutboxCollector, TccCollector, NotificationCollector)


@require_safe
@never_cache
def metrics_view(request):
    """Prometheus text exposition of every collector, for the bearer of METRICS_TOKEN only (404
    while none is set: the endpoint is off)."""
    refusal = metrics_token_refusal(request)
    if refusal is not None:
        return refusal
    registry = CollectorRegistry(auto_describe=False)
    for collector in COLLECTORS:
        registry.register(collector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
