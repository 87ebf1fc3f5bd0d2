from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from orders.creation import order_create, order_pay_url
from orders.models import MAX_AMOUNT, Order, PayMethod
from orders.payments import order_pay_with_balance
from orders.selectors import order_get, order_list, order_notify_url
from paysys.api.fields import (
    MinorUnitsField,
    StrictInputSerializer,
    StrictIntegerField,
    TextField,
    reject_unknown_params,
)
from paysys.api.pagination import (
    LIST_QUERY_REFUSED,
    PageQuerySerializer,
    list_query,
    page_serializer,
    paginated_response,
)
from paysys.api.schema import NO_QUERY_PARAMETERS, ecma_pattern, error_responses
from paysys.core.errors import (
    Conflict,
    Forbidden,
    InsufficientFunds,
    LimitReached,
    NotFound,
    Unavailable,
)
from paysys.core.netguard import check_url

# a merchant's order number, in a body and in a path: the same rule, stated in the schema
MERCHANT_ORDER_NO_MAX_LENGTH = Order._meta.get_field("merchant_order_no").max_length
MERCHANT_ORDER_NO_CHARS = RegexValidator(r"\A[A-Za-z0-9_-]+\Z", "letters, digits, '-' and '_' only")
MERCHANT_ORDER_NO_PARAMETER = OpenApiParameter(
    "merchant_order_no",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": MERCHANT_ORDER_NO_MAX_LENGTH,
        "pattern": ecma_pattern(MERCHANT_ORDER_NO_CHARS),
    },
    OpenApiParameter.PATH,
    description="your order number, as given when the order was created",
)
NOT_FOUND = "no such order (or another merchant's)"


class OrderOutputSerializer(serializers.ModelSerializer):
    """An order as its merchant sees it; needs ``context={"merchant": ...}`` (the effective notify URL)."""

    pay_url = serializers.SerializerMethodField()
    notify_url = serializers.SerializerMethodField()
    # declared: a read-only model field would lose its blank choice ("" until the order is paid)
    pay_method = serializers.ChoiceField(
        choices=PayMethod.choices,
        allow_blank=True,
        read_only=True,
        help_text="how it was paid; empty until it is",
    )

    class Meta:
        model = Order
        fields = [
            "merchant_order_no",
            "out_trade_no",
            "amount",
            "currency",
            "subject",
            "payer_id",
            "notify_url",
            "status",
            "pay_method",
            "pay_url",
            "bank_trade_no",
            "created_at",
            "expires_at",
            "paid_at",
            "refunded_amount",
        ]
        read_only_fields = (
            fields  # output only: every field is always present (required in the schema)
        )

    @extend_schema_field(
        serializers.URLField(
            help_text="the bank's page where the payer pays; the same URL on "
            "every read of the order"
        )
    )
    def get_pay_url(self, order: Order) -> str:
        return order_pay_url(order)

    @extend_schema_field(
        serializers.URLField(
            help_text="where the paid-order notification goes: the order's "
            "notify_url, or the merchant's default when it had none"
        )
    )
    def get_notify_url(self, order: Order) -> str:
        return order_notify_url(order, self.context["merchant"])


OrderPageSerializer = page_serializer(OrderOutputSerializer)


class OrdersApi(APIView):
    """``POST /api/v1/orders`` creates (idempotently); ``GET /api/v1/orders`` lists, newest first."""

    @extend_schema_serializer(
        component_name="OrderCreate"
    )  # OrderCreateRequest, not a generic CreateInput
    class CreateInputSerializer(StrictInputSerializer):
        merchant_order_no = TextField(
            min_length=1,
            max_length=MERCHANT_ORDER_NO_MAX_LENGTH,
            trim_whitespace=False,
            validators=[MERCHANT_ORDER_NO_CHARS],
        )
        amount = MinorUnitsField(
            min_value=1,
            max_value=MAX_AMOUNT,
            help_text="an integer in minor units (fen): 1999 for 19.99",
        )
        currency = serializers.ChoiceField(
            choices=settings.ORDER_CURRENCIES,
            default=settings.ORDER_CURRENCIES[0],
            error_messages={"invalid_choice": f"one of {', '.join(settings.ORDER_CURRENCIES)}"},
        )
        subject = TextField(min_length=1, max_length=128, trim_whitespace=False)
        payer_id = StrictIntegerField(min_value=1, max_value=2**63 - 1)
        notify_url = serializers.URLField(
            max_length=512, required=False, allow_blank=True, default=""
        )

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
        out_trade_no = serializers.CharField(
            required=False, help_text="the platform's order number: finds that one order"
        )
        status = serializers.ChoiceField(choices=Order.Status.choices, required=False)
        created_after = serializers.DateTimeField(required=False)
        created_before = serializers.DateTimeField(required=False)

    @extend_schema(
        operation_id="orders_create",
        request=CreateInputSerializer,
        responses={
            201: OrderOutputSerializer,
            200: OpenApiResponse(
                OrderOutputSerializer, description="identical replay: the existing order"
            ),
            **error_responses(
                {
                    serializers.ValidationError: "invalid fields (each named in error.fields), or an unknown query parameter",
                    Conflict: "merchant_order_no reused with different fields",
                    LimitReached: "too many open unpaid orders (ORDER_MAX_OPEN_PER_MERCHANT): create more once some "
                    "are paid, closed or expired",
                }
            ),
        },
    )
    def post(self, request):
        reject_unknown_params(request.query_params, set())
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
        responses={
            200: OrderPageSerializer,
            **error_responses(
                {
                    serializers.ValidationError: LIST_QUERY_REFUSED,
                }
            ),
        },
    )
    def get(self, request):
        orders = order_list(merchant=request.user, **list_query(request, self.ListFilterSerializer))
        return paginated_response(
            request,
            self,
            orders,
            lambda page: (
                OrderOutputSerializer(page, many=True, context={"merchant": request.user}).data
            ),
        )


class OrderDetailApi(APIView):
    @extend_schema(
        operation_id="orders_retrieve",
        parameters=[MERCHANT_ORDER_NO_PARAMETER],
        responses={
            200: OrderOutputSerializer,
            **error_responses(
                {
                    serializers.ValidationError: NO_QUERY_PARAMETERS,
                    NotFound: NOT_FOUND,
                }
            ),
        },
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
        method = serializers.ChoiceField(
            choices=["balance"], help_text="balance: the payer's wallet pays"
        )
        payer_token = TextField(
            min_length=1,
            max_length=128,
            help_text=(
                "the payer's agreement with this merchant: its token, from create_payer or payer_agreement issue"
            ),
        )

    @extend_schema(
        operation_id="orders_pay",
        request=InputSerializer,
        parameters=[MERCHANT_ORDER_NO_PARAMETER],
        responses={
            200: OpenApiResponse(OrderOutputSerializer, description="paid: the order (SUCCESS)"),
            **error_responses(
                {
                    serializers.ValidationError: "invalid fields, or an unknown query parameter",
                    InsufficientFunds: "the payer's wallet cannot afford the order (nothing was charged)",
                    Forbidden: (
                        "payer_token is not the order's payer's agreement with this merchant (payer_token_mismatch), is its "
                        "agreement with another merchant (agreement_other_merchant), is revoked (agreement_revoked), or the "
                        "payment is over the agreement's limits (agreement_payment_limit, agreement_daily_limit, "
                        "agreement_currency); nothing was charged"
                    ),
                    NotFound: NOT_FOUND,
                    Conflict: "the order is not payable (paid, closed or failed, expired, or being paid at the bank)",
                    Unavailable: "a service did not answer, or another payment holds the order for a moment; nothing "
                    "changed (order and balances as before)",
                }
            ),
        },
    )
    def post(self, request, merchant_order_no: str):
        reject_unknown_params(request.query_params, set())
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"non_field_errors": "a JSON object is required"})
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        order = order_pay_with_balance(
            merchant=request.user,
            merchant_order_no=merchant_order_no,
            payer_token=data.validated_data["payer_token"],
        )
        return Response(OrderOutputSerializer(order, context={"merchant": request.user}).data)
