from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from paysys.api.fields import MinorUnitsField, StrictInputSerializer, StrictIntegerField, TextField, reject_unknown_params
from paysys.core.errors import NotFound
from paysys.api.pagination import PageQuerySerializer, list_query, page_serializer, paginated_response
from paysys.api.schema import error_responses as shared_error_responses
from paysys.core.netguard import check_url
from orders.models import MAX_AMOUNT, Order
from orders.selectors import order_get, order_list, order_notify_url
from orders.services import order_create, order_pay_url, order_pay_with_balance

ERRORS = {
    400: "invalid input",
    401: "missing or invalid API key",
    402: "the payer's wallet cannot afford the order (nothing was charged)",
    403: (
        "payer_token is not the order's payer's agreement with this merchant (payer_token_mismatch), is its "
        "agreement with another merchant (agreement_other_merchant), is revoked (agreement_revoked), or the "
        "payment is over the agreement's limits (agreement_payment_limit, agreement_daily_limit, "
        "agreement_currency); nothing was charged"
    ),
    404: "no such order (or another merchant's)",
    409: "merchant_order_no reused with different fields",
    413: "request body too large",
    429: "too many requests for this API key, or too many open unpaid orders",
    503: (
        "a service did not answer, or another payment holds the order for a moment; nothing changed "
        "(order and balances as before): retry after Retry-After seconds"
    ),
}
PAY_CONFLICT = "the order is not payable (paid, closed or failed, expired, or being paid at the bank)"


def error_responses(*codes: int) -> dict:
    return shared_error_responses(ERRORS, *codes)


class OrderOutputSerializer(serializers.ModelSerializer):
    """An order as its merchant sees it; needs ``context={"merchant": ...}`` (the effective notify URL)."""

    pay_url = serializers.SerializerMethodField()
    notify_url = serializers.SerializerMethodField()

    class Meta:
        model = Order
        fields = [
            "merchant_order_no", "out_trade_no", "amount", "currency", "subject", "payer_id", "notify_url",
            "status", "pay_method", "pay_url", "bank_trade_no", "created_at", "expires_at", "paid_at",
        ]

    def get_pay_url(self, order: Order) -> str:
        return order_pay_url(order)

    @extend_schema_field(serializers.URLField(help_text="where the paid-order notification goes: the order's "
                                                        "notify_url, or the merchant's default when it had none"))
    def get_notify_url(self, order: Order) -> str:
        return order_notify_url(order, self.context["merchant"])


OrderPageSerializer = page_serializer(OrderOutputSerializer)


class OrdersApi(APIView):
    """``POST /api/v1/orders`` creates (idempotently); ``GET /api/v1/orders`` lists, newest first."""

    class CreateInputSerializer(StrictInputSerializer):
        merchant_order_no = TextField(max_length=64, min_length=1)
        amount = MinorUnitsField(min_value=1, max_value=MAX_AMOUNT, help_text="an integer in minor units (fen): 1999 for 19.99")
        currency = TextField(min_length=3, max_length=3, default="CNY")
        subject = TextField(min_length=1, max_length=128, trim_whitespace=False)
        payer_id = StrictIntegerField(min_value=1, max_value=2**63 - 1)
        notify_url = serializers.URLField(max_length=512, required=False, allow_blank=True, default="")

        def validate_merchant_order_no(self, value: str) -> str:
            if not all(c.isascii() and (c.isalnum() or c in "-_") for c in value):
                raise serializers.ValidationError("letters, digits, '-' and '_' only")
            return value

        def validate_currency(self, value: str) -> str:
            if value not in settings.ORDER_CURRENCIES:
                raise serializers.ValidationError(f"one of {', '.join(settings.ORDER_CURRENCIES)}")
            return value

        def validate_subject(self, value: str) -> str:
            if not value.strip():
                raise serializers.ValidationError("must not be blank")
            return value

        def validate_notify_url(self, value: str) -> str:
            if value and not value.lower().startswith(("http://", "https://")):
                raise serializers.ValidationError("must be an http(s) URL")
            if value:
                check_url(value, field="notify_url")  # never the platform's own network (SSRF)
            return value

    class ListFilterSerializer(PageQuerySerializer):
        out_trade_no = serializers.CharField(required=False, help_text="the platform's order number: finds that one order")
        status = serializers.ChoiceField(choices=Order.Status.choices, required=False)
        created_after = serializers.DateTimeField(required=False)
        created_before = serializers.DateTimeField(required=False)

    @extend_schema(
        operation_id="orders_create",
        request=CreateInputSerializer,
        responses={
            201: OrderOutputSerializer,
            200: OpenApiResponse(OrderOutputSerializer, description="identical replay: the existing order"),
            **error_responses(400, 401, 409, 413, 429),
        },
    )
    def post(self, request):
        data = self.CreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        order, created = order_create(merchant=request.user, **data.validated_data)
        return Response(
            OrderOutputSerializer(order, context={"merchant": request.user}).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="orders_list",
        parameters=[ListFilterSerializer],
        responses={200: OrderPageSerializer, **error_responses(400, 401, 404, 429)},
    )
    def get(self, request):
        orders = order_list(merchant=request.user, **list_query(request, self.ListFilterSerializer))
        return paginated_response(
            request, self, orders, lambda page: OrderOutputSerializer(page, many=True, context={"merchant": request.user}).data
        )


class OrderDetailApi(APIView):
    @extend_schema(
        operation_id="orders_retrieve",
        responses={200: OrderOutputSerializer, **error_responses(401, 404, 429)},
    )
    def get(self, request, merchant_order_no: str):
        reject_unknown_params(request.query_params, set())
        try:
            order = order_get(merchant=request.user, merchant_order_no=merchant_order_no)
        except NotFound:
            if order_list(merchant=request.user, out_trade_no=merchant_order_no).exists():
                raise NotFound(
                    f"no order with merchant_order_no {merchant_order_no}; that is the platform's out_trade_no "
                    f"of one of your orders: GET /api/v1/orders?out_trade_no={merchant_order_no}"
                ) from None
            raise
        return Response(OrderOutputSerializer(order, context={"merchant": request.user}).data)


class OrderPayApi(APIView):
    """``POST /api/v1/orders/{merchant_order_no}/pay``: pay the order from its payer's wallet."""

    @extend_schema_serializer(component_name="OrderPay")
    class InputSerializer(StrictInputSerializer):
        method = serializers.ChoiceField(choices=["balance"], help_text="balance: the payer's wallet pays")
        payer_token = TextField(min_length=1, max_length=128, help_text=(
            "the payer's agreement with this merchant: its token, from create_payer or payer_agreement issue"
        ))

    @extend_schema(
        operation_id="orders_pay",
        request=InputSerializer,
        responses={
            200: OpenApiResponse(OrderOutputSerializer, description="paid: the order (SUCCESS)"),
            **shared_error_responses({**ERRORS, 409: PAY_CONFLICT}, 400, 401, 402, 403, 404, 409, 413, 429, 503),
        },
        parameters=[
            OpenApiParameter("Retry-After", OpenApiTypes.INT, OpenApiParameter.HEADER, response=[503],
                             description="seconds to wait before trying again"),
        ],
    )
    def post(self, request, merchant_order_no: str):
        reject_unknown_params(request.query_params, set())
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"non_field_errors": "a JSON object is required"})
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        order = order_pay_with_balance(
            merchant=request.user, merchant_order_no=merchant_order_no, payer_token=data.validated_data["payer_token"]
        )
        return Response(OrderOutputSerializer(order, context={"merchant": request.user}).data)
