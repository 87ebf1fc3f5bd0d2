from django.urls import include, path

from paysys.sandbox import views

urlpatterns = [
    path("bank/pay/<str:token>", views.BankPayView.as_view(), name="sandbox-bank-pay"),
    path("bank/release", views.bank_release, name="sandbox-bank-release"),
    path("bank/payments/<str:out_trade_no>", views.bank_payment_query, name="sandbox-bank-payment"),
    path("bank/refunds/", views.bank_refunds, name="sandbox-bank-refunds"),
    path("bank/refunds/<str:refund_no>", views.bank_refunds, name="sandbox-bank-refund"),
    path("", include("paysys.sandbox.merchant.urls")),
]
