"""Which statuses the published schema documents for each operation, and whether an answer's is one.

``tests/conftest.py`` checks every answer the Django test client gets in any test: a status some
test provokes on an operation and the schema does not list for it fails that test, naming both.
(``tests/api/test_documented_statuses.py`` checks the answers' bodies and headers too, and that
every documented status is provoked.)
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

from django.conf import settings
from django.test import override_settings

Operations = list[tuple[str, re.Pattern, dict[str, set[int]]]]
# drf-spectacular's schema generation is not thread-safe (extension classes load lazily): tests
# that call the API from many threads at once must not build it side by side
_generating = threading.Lock()


@lru_cache(maxsize=2)
def documented_operations(messaging_on: bool) -> Operations:
    """(path template, its pattern, {method: documented statuses}) of every path of the schema as
    served with the message API on or off (it is in the schema only when on)."""
    from drf_spectacular.generators import SchemaGenerator

    with override_settings(
        MESSAGING_SERVICE_TOKEN="documented-statuses-token-0123456789" if messaging_on else ""
    ):
        schema = SchemaGenerator().get_schema(request=None, public=True)
    return [
        (
            template,
            re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template))),
            {
                method: {int(code) for code in operation["responses"]}
                for method, operation in methods.items()
            },
        )
        for template, methods in schema["paths"].items()
    ]


def undocumented_status(response) -> str | None:
    """Why ``response`` (the Django test client's) has a status its operation does not document,
    or None. A method the path does not take is held to what every operation of the path says."""
    request = response.wsgi_request
    method = request.method.lower()
    if method in ("head", "options") or not request.path.startswith("/api/"):
        return None
    with _generating:
        operations = documented_operations(bool(settings.MESSAGING_SERVICE_TOKEN))
    for template, pattern, methods in operations:
        if pattern.fullmatch(request.path):
            statuses = methods.get(method) or set.intersection(*methods.values())
            if response.status_code in statuses:
                return None
            return (
                f"{request.method} {request.get_full_path()} answered {response.status_code}, which the schema "
                f"does not document for {method.upper()} {template} ({', '.join(map(str, sorted(statuses)))}): "
                f"{response.content[:300]!r}"
            )
    return None
