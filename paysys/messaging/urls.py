"""Routes of the message service: the two-phase HTTP API (mounted at ``api/v1/``) and the
Prometheus endpoint (mounted at the site root as ``metrics``). The admin registers itself."""

from django.urls import path

from paysys.messaging.api import MessageConfirmApi, MessageDetailApi, MessageDiscardApi, MessagePrepareApi
from paysys.messaging.metrics import metrics_view

api_urlpatterns = [
    path("messages", MessagePrepareApi.as_view(), name="messages"),
    path("messages/<uuid:message_id>", MessageDetailApi.as_view(), name="message-detail"),
    path("messages/<uuid:message_id>/confirm", MessageConfirmApi.as_view(), name="message-confirm"),
    path("messages/<uuid:message_id>/discard", MessageDiscardApi.as_view(), name="message-discard"),
]

# include("paysys.messaging.urls") under "api/v1/" mounts the API
urlpatterns = api_urlpatterns

__all__ = ["api_urlpatterns", "metrics_view", "urlpatterns"]
