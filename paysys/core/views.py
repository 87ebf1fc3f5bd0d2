import threading
import time

from django.conf import settings
from django.db import DatabaseError, connections
from django.http import JsonResponse

from paysys.core import heartbeats

# the last verdict and when it was reached: /healthz asks every database at most once per
# HEALTHZ_CACHE_SECONDS per process. Anyone may call it: 32 callers at once used to open a connection
# to all seven databases from every web thread (MySQL's connection limit, for everyone)
_last_check: tuple[float, dict] = (float("-inf"), {})
_checking = threading.Lock()


def database_states() -> dict[str, str]:
    """alias -> "ok", or "down: <error class>" for a database that does not answer."""
    databases = {}
    for alias in connections:
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
            databases[alias] = "ok"
        except DatabaseError as exc:
            databases[alias] = f"down: {exc.__class__.__name__}"
    return databases


def healthz(request):
    """200 when every service database answers; 503 naming the ones that do not.

    ``status`` is "degraded" also while a worker (or beat) is dead, but the code stays 200: this
    web process still takes payments (a bank notify is stored and acknowledged with the orders
    worker down), so a load balancer must keep sending it traffic. Which worker: ``/healthz/detail``.
    """
    global _last_check
    with _checking:
        checked_at, verdict = _last_check
        if time.monotonic() - checked_at >= settings.HEALTHZ_CACHE_SECONDS:
            workers_alive = all(state.alive for state in heartbeats.liveness().values())
            verdict = {
                "databases": database_states(),
                "workers": "ok" if workers_alive else "degraded",
            }
            _last_check = (time.monotonic(), verdict)
    databases_up = all(state == "ok" for state in verdict["databases"].values())
    healthy = databases_up and verdict["workers"] == "ok"
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", **verdict}, status=200 if databases_up else 503
    )
