from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularSwaggerSplitView

from orders.bank_api import bank_order_status
from orders.refund_bank import bank_refund_notify
from paysys.api.exceptions import json_error_view
from paysys.api.schema_view import SchemaView
from paysys.core.views import healthz
from paysys.gateway.api import BankNotifyApi
from paysys.ops.metrics import metrics_view
from paysys.ops.views import healthz_detail, overview_view, trace_view

admin.site.site_header = "paysys admin"
admin.site.site_title = "paysys"
admin.site.index_template = (
    "admin/ops/index.html"  # the operations overview and the trace, at the top
)
admin.site.enable_nav_sidebar = (
    False  # its 290 px pushed list columns (a TCC's status) off a 1280 px screen
)

urlpatterns = [
    # the banner's address and admin's "View site": the API docs (not Django's list of every URL)
    path("", RedirectView.as_view(url="/api/docs/"), name="home"),
    path("healthz", healthz, name="healthz"),
    path("healthz/detail", healthz_detail, name="healthz-detail"),
    path("admin/overview/", admin.site.admin_view(overview_view), name="admin-overview"),
    path("admin/trace/", admin.site.admin_view(trace_view), name="admin-trace"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("orders.urls")),
    path("api/v1/", include("accounts.urls")),
    path("api/v1/", include("paysys.messaging.urls")),
    path("api/v1/", include("notifications.urls")),
    path("metrics", metrics_view, name="metrics"),
    path(
        "api/schema/",
        SchemaView.as_view(),
        name="schema",
    ),
    # the split view serves its start-up script as a file: no inline script, so CSP script-src 'self' holds
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(
            url_name="schema",
            authentication_classes=[],
            permission_classes=[],
            # a page: GET and HEAD. DRF's OPTIONS answer has no template to render here (a 500)
            http_method_names=["get", "head"],
        ),
        name="docs",
    ),
    path("gateway/bank/notify", BankNotifyApi.as_view(), name="bank-notify"),
    path("gateway/bank/orders/<str:out_trade_no>", bank_order_status, name="bank-order-status"),
    path("gateway/bank/refund-notify", bank_refund_notify, name="bank-refund-notify"),
]
if settings.SANDBOX_ENABLED:  # an outside party's pages: absent (404) wherever it is off
    urlpatterns.append(path("sandbox/", include("paysys.sandbox.urls")))

handler400 = json_error_view(400, "bad_request", "bad request")
handler403 = json_error_view(403, "forbidden", "forbidden")
handler404 = json_error_view(404, "not_found", "not found")
handler500 = json_error_view(500, "server_error", "internal error")
