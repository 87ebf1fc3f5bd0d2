from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from paysys.api.exceptions import json_error_view
from paysys.core.views import healthz
from paysys.gateway.api import BankNotifyApi
from paysys.messaging.metrics import metrics_view
from paysys.tcc.metrics import with_tcc_metrics

admin.site.site_header = "paysys admin"
admin.site.site_title = "paysys"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("orders.urls")),
    path("api/v1/", include("accounts.urls")),
    path("api/v1/", include("paysys.messaging.urls")),
    path("metrics", with_tcc_metrics(metrics_view), name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[]), name="docs"),
    path("gateway/bank/notify", BankNotifyApi.as_view(), name="bank-notify"),
    path("sandbox/", include("paysys.sandbox.urls")),
]

handler400 = json_error_view(400, "bad_request", "bad request")
handler403 = json_error_view(403, "forbidden", "forbidden")
handler404 = json_error_view(404, "not_found", "not found")
handler500 = json_error_view(500, "server_error", "internal error")
