from django.urls import path

from accounts.api import BalanceApi, BalanceEntriesApi

urlpatterns = [
    path("balance", BalanceApi.as_view(), name="balance"),
    path("balance/entries", BalanceEntriesApi.as_view(), name="balance-entries"),
]
