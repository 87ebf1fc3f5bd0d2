from django.urls import path

from orders.api import OrderDetailApi, OrderPayApi, OrdersApi
from orders.refund_api import OrderRefundsApi, RefundDetailApi

urlpatterns = [
    path("orders", OrdersApi.as_view(), name="orders"),
    path("orders/<str:merchant_order_no>", OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<str:merchant_order_no>/pay", OrderPayApi.as_view(), name="order-pay"),
    path("orders/<str:merchant_order_no>/refunds", OrderRefundsApi.as_view(), name="order-refunds"),
    path("refunds/<str:refund_no>", RefundDetailApi.as_view(), name="refund-detail"),
]
