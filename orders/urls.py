from django.urls import path

from orders.api import OrderDetailApi, OrdersApi

urlpatterns = [
    path("orders", OrdersApi.as_view(), name="orders"),
    path("orders/<str:merchant_order_no>", OrderDetailApi.as_view(), name="order-detail"),
]
