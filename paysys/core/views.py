from django.db import DatabaseError, connections
from django.http import JsonResponse


def healthz(request):
    """200 when every service database answers; 503 naming the ones that do not."""
    databases = {}
    for alias in connections:
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
            databases[alias] = "ok"
        except DatabaseError as exc:
            databases[alias] = f"down: {exc.__class__.__name__}"
    healthy = all(state == "ok" for state in databases.values())
    return JsonResponse({"status": "ok" if healthy else "degraded", "databases": databases}, status=200 if healthy else 503)
