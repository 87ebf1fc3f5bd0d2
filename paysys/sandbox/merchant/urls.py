from django.urls import path

from paysys.sandbox.merchant import views

urlpatterns = [
    path("merchant/notify", views.merchant_notify, name="sandbox-merchant-notify"),
    path(
        "merchant/<int:merchant_id>/notify",
        views.merchant_notify,
        name="sandbox-merchant-notify-one",
    ),
    path("merchant/<int:merchant_id>", views.merchant_endpoint, name="sandbox-merchant"),
    path(
        "merchant/<int:merchant_id>/received",
        views.merchant_received,
        name="sandbox-merchant-received",
    ),
]
