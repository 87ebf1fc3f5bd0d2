import threading
import time

from django.conf import settings
from django.db import DatabaseError, connections
from django.http import JsonResponse


# the last verdict and when it was reached: /healthz asks every database at most once per
# HEALTHZ_CACHE_SECONDS per process. Anyone may call it: 32 callers at once used to open a connection
# to all seven databases from every web thread (MySQL's connection limit, for everyone)
_last_check: tuple[float, dict] = (float("-inf"), {})
_checking = threading.Lock()


def healthz(request):
    """200 when every service database answers; 503 naming the ones that do not."""
    global _last_check
    with _checking:
        checked_at, databases = _last_check
        if time.monotonic() - checked_at >= settings.HEALTHZ_CACHE_SECONDS:
            databases = {}
            for alias in connections:
                try:
                    with connections[alias].cursor() as cursor:
                        cursor.execute("SELECT 1")
                    databases[alias] = "ok"
                except DatabaseError as exc:
                    databases[alias] = f"down: {exc.__class__.__name__}"
            _last_check = (time.monotonic(), databases)
    healthy = all(state == "ok" for state in databases.values())
    return JsonResponse({"status": "ok" if healthy else "degraded", "databases": databases}, status=200 if healthy else 503)
