"""Routes of the message service's two-phase HTTP API, mounted at ``api/v1/``. The Prometheus
endpoint (``paysys.messaging.metrics.metrics_view``) is mounted by ``paysys/urls.py`` at the site
root; the admin registers itself."""

from django.urls import path

from paysys.messaging.api import (
    MessageConfirmApi,
    MessageDetailApi,
    MessageDiscardApi,
    MessagePrepareApi,
)

api_urlpatterns = [
    path("messages", MessagePrepareApi.as_view(), name="messages"),
    path("messages/<uuid:message_id>", MessageDetailApi.as_view(), name="message-detail"),
    path("messages/<uuid:message_id>/confirm", MessageConfirmApi.as_view(), name="message-confirm"),
    path("messages/<uuid:message_id>/discard", MessageDiscardApi.as_view(), name="message-discard"),
]

# include("paysys.messaging.urls") under "api/v1/" mounts the API
urlpatterns = api_urlpatterns

__all__ = ["api_urlpatterns", "urlpatterns"]
