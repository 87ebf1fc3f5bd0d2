"""The merchant's refund API: ``POST/GET /api/v1/orders/{merchant_order_no}/refunds``,
``GET /api/v1/refunds/{refund_no}`` (orders.refunds, docs/refunds.md)."""

from django.core.validators import RegexValidator
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from orders.api import MERCHANT_ORDER_NO_CHARS, MERCHANT_ORDER_NO_PARAMETER, NOT_FOUND
from orders.models import MAX_AMOUNT, Refund
from orders.refunds import refund_create, refund_get, refunds_of_order
from paysys.api.fields import (
    MinorUnitsField,
    StrictInputSerializer,
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
from paysys.api.schema import NO_QUERY_PARAMETERS, error_responses
from paysys.core.errors import Conflict, InsufficientFunds, NotFound, Unavailable

# the platform's own refunds of duplicate bank payments are numbered dup-<bank_trade_no> in the
# merchant's space (orders.refunds): a merchant must not be able to take such a number first
RESERVED_PREFIX = RegexValidator(
    r"^(?i:dup-)",
    inverse_match=True,
    message="refund numbers starting with dup- are the platform's",
)


class RefundOutputSerializer(serializers.ModelSerializer):
    merchant_order_no = serializers.CharField(source="order.merchant_order_no", read_only=True)
    order_status = serializers.CharField(
        source="order.status",
        read_only=True,
        help_text="the order's status when this refund was read",
    )
    refunded_amount = serializers.IntegerField(
        source="order.refunded_amount",
        read_only=True,
        help_text="the order's refunded amount when this refund was read",
    )
    method = serializers.CharField(
        read_only=True, help_text="bank or balance: where the money goes back"
    )

    class Meta:
        model = Refund
        fields = [
            "refund_no",
            "merchant_refund_no",
            "merchant_order_no",
            "out_trade_no",
            "amount",
            "currency",
            "reason",
            "status",
            "failure_reason",
            "method",
            "points",
            "order_status",
            "refunded_amount",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


RefundPageSerializer = page_serializer(RefundOutputSerializer)


class OrderRefundsApi(APIView):
    """``POST`` refunds (idempotently on merchant_refund_no); ``GET`` lists the order's refunds."""

    @extend_schema_serializer(component_name="RefundCreate")
    class InputSerializer(StrictInputSerializer):
        merchant_refund_no = TextField(
            min_length=1,
            max_length=64,
            trim_whitespace=False,
            validators=[MERCHANT_ORDER_NO_CHARS, RESERVED_PREFIX],
            help_text="your refund number: the idempotency key of this refund "
            "(not starting with dup-: the platform's refunds of duplicate payments)",
        )
        amount = MinorUnitsField(
            min_value=1,
            max_value=MAX_AMOUNT,
            help_text="minor units, at most what is left to refund",
        )
        reason = TextField(
            max_length=255, required=False, allow_blank=True, default="", trim_whitespace=False
        )

    @extend_schema(
        operation_id="refunds_create",
        request=InputSerializer,
        parameters=[MERCHANT_ORDER_NO_PARAMETER],
        responses={
            201: RefundOutputSerializer,
            200: OpenApiResponse(
                RefundOutputSerializer, description="identical replay: the existing refund"
            ),
            **error_responses(
                {
                    serializers.ValidationError: "invalid fields, or an unknown query parameter",
                    InsufficientFunds: "your available balance cannot cover the refund (nothing was frozen)",
                    NotFound: NOT_FOUND,
                    Conflict: (
                        "merchant_refund_no reused with different fields (idempotency_conflict), the order is not "
                        "paid (order_not_refundable), or the amount is above what is left to refund "
                        "(refund_exceeds_refundable: the message names it)"
                    ),
                    Unavailable: "a service did not answer; nothing was refunded, retry",
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
        refund, created = refund_create(
            merchant=request.user, merchant_order_no=merchant_order_no, **data.validated_data
        )
        return Response(
            RefundOutputSerializer(refund).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="refunds_list",
        parameters=[MERCHANT_ORDER_NO_PARAMETER, PageQuerySerializer],
        responses={
            200: RefundPageSerializer,
            **error_responses(
                {
                    serializers.ValidationError: LIST_QUERY_REFUSED,
                    NotFound: NOT_FOUND,
                }
            ),
        },
    )
    def get(self, request, merchant_order_no: str):
        list_query(request, PageQuerySerializer)
        refunds = refunds_of_order(merchant=request.user, merchant_order_no=merchant_order_no)
        return paginated_response(
            request, self, refunds, lambda page: RefundOutputSerializer(page, many=True).data
        )


class RefundDetailApi(APIView):
    @extend_schema(
        operation_id="refunds_retrieve",
        parameters=[
            OpenApiParameter(
                "refund_no", str, OpenApiParameter.PATH, description="the platform's refund_no"
            )
        ],
        responses={
            200: RefundOutputSerializer,
            **error_responses(
                {
                    serializers.ValidationError: NO_QUERY_PARAMETERS,
                    NotFound: "no such refund (or another merchant's)",
                }
            ),
        },
    )
    def get(self, request, refund_no: str):
        reject_unknown_params(request.query_params, set())
        return Response(
            RefundOutputSerializer(refund_get(merchant=request.user, refund_no=refund_no)).data
        )
