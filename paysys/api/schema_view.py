"""``GET /api/schema/`` served from memory. (Apart from paysys.api.schema, which DRF imports while
drf-spectacular's views are still loading.)"""

import threading

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SCHEMA_KWARGS, SpectacularAPIView
from rest_framework.exceptions import ValidationError


class SchemaView(SpectacularAPIView):
    """``GET /api/schema/``: the schema, built and rendered once per process and format, then
    served as stored bytes. Built on each request it cost 30-200 ms of CPU, open to anyone: a
    handful of anonymous requests a second kept the web threads busy. One build at a time, too:
    drf-spectacular's first build loads its extensions in a way that is not thread-safe (concurrent
    first requests answered 500). The schema depends only on code and settings: a changed setting
    (tests) drops what was stored."""

    authentication_classes: list = []
    permission_classes: list = []
    _lock = threading.Lock()
    _built: dict[type, HttpResponse] = {}

    @extend_schema(**SCHEMA_KWARGS)  # as the view it extends: not in the schema it serves
    def get(self, request, *args, **kwargs):
        # one schema for everyone: drf-spectacular would build it for the first request's
        # ?version= or ?lang= (any text), and the stored answer would carry it to every client
        if unknown := sorted(set(request.query_params) - {"format"}):
            raise ValidationError({name: "the schema takes no such parameter" for name in unknown})
        renderer = type(request.accepted_renderer)  # one of the view's few renderer classes
        with self._lock:
            if renderer not in self._built:
                response = super().get(request, *args, **kwargs)
                response.accepted_renderer = request.accepted_renderer
                response.accepted_media_type = request.accepted_media_type
                response.renderer_context = self.get_renderer_context()
                self._built[renderer] = response.render()
            built = self._built[renderer]
        answer = HttpResponse(built.content, content_type=built["Content-Type"])
        for name, value in built.items():
            answer.setdefault(name, value)
        return answer


@receiver(setting_changed)
def _forget_built_schemas(**kwargs) -> None:
    with SchemaView._lock:
        SchemaView._built.clear()
