from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import FundEntry
from accounts.selectors import merchant_balance, merchant_entry_list
from paysys.api.fields import reject_unknown_params
from paysys.api.pagination import (
    LIST_QUERY_REFUSED,
    PageQuerySerializer,
    list_query,
    page_serializer,
    paginated_response,
)
from paysys.api.schema import error_responses


class CurrencyField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(
            choices=settings.ORDER_CURRENCIES,
            required=False,
            help_text="default: the first accepted currency",
            **kwargs,
        )


class BalanceOutputSerializer(serializers.Serializer):
    currency = serializers.CharField()
    available = serializers.IntegerField(help_text="balance − frozen, minor units")
    frozen = serializers.IntegerField(
        help_text="reserved for outgoing payments not yet confirmed, minor units"
    )
    pending_in = serializers.IntegerField(
        help_text="incoming payments not yet confirmed, minor units"
    )


class BalanceApi(APIView):
    """``GET /api/v1/balance``: the merchant's own fund account (zeros before its first payment)."""

    class InputSerializer(serializers.Serializer):
        currency = CurrencyField()

    @extend_schema(
        operation_id="balance_retrieve",
        parameters=[InputSerializer],
        responses={
            200: BalanceOutputSerializer,
            **error_responses(
                {
                    serializers.ValidationError: "an unknown or malformed query parameter (a currency not served)",
                }
            ),
        },
    )
    def get(self, request):
        reject_unknown_params(request.query_params, set(self.InputSerializer().fields))
        query = self.InputSerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        currency = query.validated_data.get("currency") or settings.ORDER_CURRENCIES[0]
        return Response(
            BalanceOutputSerializer(merchant_balance(merchant=request.user, currency=currency)).data
        )


class EntryOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = FundEntry
        fields = ["amount", "direction", "balance_after", "out_trade_no", "reason", "created_at"]
        read_only_fields = fields  # output only: every field is always present


EntryPageSerializer = page_serializer(EntryOutputSerializer)


class BalanceEntriesApi(APIView):
    """``GET /api/v1/balance/entries``: the merchant's balance history (posted entries), newest first."""

    class InputSerializer(PageQuerySerializer):
        currency = CurrencyField()

    @extend_schema(
        operation_id="balance_entries_list",
        parameters=[InputSerializer],
        responses={
            200: EntryPageSerializer,
            **error_responses(
                {
                    serializers.ValidationError: LIST_QUERY_REFUSED,
                }
            ),
        },
    )
    def get(self, request):
        currency = (
            list_query(request, self.InputSerializer).get("currency")
            or settings.ORDER_CURRENCIES[0]
        )
        entries = merchant_entry_list(merchant=request.user, currency=currency)
        return paginated_response(
            request, self, entries, lambda page: EntryOutputSerializer(page, many=True).data
        )
