from django.urls import path

from orders.api import OrderDetailApi, OrderPayApi, OrdersApi

urlpatterns = [
    path("orders", OrdersApi.as_view(), name="orders"),
    path("orders/<str:merchant_order_no>", OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<str:merchant_order_no>/pay", OrderPayApi.as_view(), name="order-pay"),
]
