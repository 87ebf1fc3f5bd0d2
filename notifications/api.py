"""The merchant's view of its notifications: list, one with its attempts, resend.

``{id}`` is the notification's ``webhook-id`` (``msg_…``): the id the merchant received in the
``webhook-id`` header, the same on every attempt and resend.
"""

import json

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications.models import Attempt, Notification
from notifications.selectors import notification_attempts, notification_get, notification_list
from notifications.services import notification_resend
from paysys.api.fields import reject_unknown_params
from paysys.api.pagination import (
    LIST_QUERY_REFUSED,
    NewestFirstPagination,
    PageQuerySerializer,
    list_query,
    page_serializer,
    paginated_response,
)
from paysys.api.schema import NO_QUERY_PARAMETERS, error_responses
from paysys.core.errors import Conflict, NotFound

NOT_FOUND = "no such notification (or another merchant's)"
ID_PARAMETER = OpenApiParameter(
    "notification_id", str, OpenApiParameter.PATH, description="the webhook-id (msg_…)"
)


class NotificationPagination(NewestFirstPagination):
    # created_at, not id: the (merchant_id[, status], created_at) indexes then give the order
    ordering = "-created_at"


class AttemptOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Attempt
        fields = [
            "number",
            "trigger",
            "started_at",
            "url",
            "status_code",
            "outcome",
            "error_class",
            "error",
            "duration_ms",
            "response_excerpt",
        ]
        read_only_fields = (
            fields  # output only: every field is always present (required in the schema)
        )


class NotificationOutputSerializer(serializers.ModelSerializer):
    id = serializers.CharField(
        source="webhook_id", help_text="the webhook-id header of every attempt"
    )
    type = serializers.CharField(source="event_type")
    payload = serializers.SerializerMethodField(help_text="the JSON body sent (and signed)")

    class Meta:
        model = Notification
        fields = [
            "id",
            "type",
            "merchant_order_no",
            "out_trade_no",
            "status",
            "url",
            "attempt_count",
            "next_attempt_at",
            "last_status_code",
            "created_at",
            "succeeded_at",
            "payload",
        ]
        read_only_fields = (
            fields  # output only: every field is always present (required in the schema)
        )
        extra_kwargs = {
            "succeeded_at": {
                "help_text": "when the merchant acknowledged it; null until then, and again "
                "from a resend on (earlier successes stay in the attempts)"
            }
        }

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_payload(self, notification: Notification) -> dict:
        return json.loads(notification.body)


class NotificationDetailOutputSerializer(NotificationOutputSerializer):
    attempts = serializers.SerializerMethodField(help_text="the latest 100 attempts, oldest first")

    class Meta(NotificationOutputSerializer.Meta):
        fields = [*NotificationOutputSerializer.Meta.fields, "last_error", "attempts"]
        read_only_fields = fields

    @extend_schema_field(AttemptOutputSerializer(many=True))
    def get_attempts(self, notification: Notification) -> list:
        return AttemptOutputSerializer(notification_attempts(notification), many=True).data


NotificationPageSerializer = page_serializer(NotificationOutputSerializer)


class NotificationListApi(APIView):
    """``GET /api/v1/notifications``: the merchant's notifications, newest first."""

    class FilterSerializer(PageQuerySerializer):
        status = serializers.ChoiceField(choices=Notification.Status.choices, required=False)
        merchant_order_no = serializers.CharField(
            max_length=64, required=False, help_text="the merchant's order number"
        )
        out_trade_no = serializers.CharField(
            max_length=64, required=False, help_text="paysys' order number"
        )
        created_after = serializers.DateTimeField(required=False)
        created_before = serializers.DateTimeField(required=False)

    @extend_schema(
        operation_id="notifications_list",
        parameters=[FilterSerializer],
        responses={
            200: NotificationPageSerializer,
            **error_responses(
                {
                    serializers.ValidationError: LIST_QUERY_REFUSED,
                }
            ),
        },
    )
    def get(self, request):
        records = notification_list(
            merchant_id=request.user.pk, **list_query(request, self.FilterSerializer)
        )
        return paginated_response(
            request,
            self,
            records,
            lambda page: NotificationOutputSerializer(page, many=True).data,
            pagination=NotificationPagination,
        )


class NotificationDetailApi(APIView):
    """``GET /api/v1/notifications/{id}``: one notification with its attempts."""

    @extend_schema(
        operation_id="notifications_retrieve",
        parameters=[ID_PARAMETER],
        responses={
            200: NotificationDetailOutputSerializer,
            **error_responses(
                {
                    serializers.ValidationError: NO_QUERY_PARAMETERS,
                    NotFound: NOT_FOUND,
                }
            ),
        },
    )
    def get(self, request, notification_id: str):
        reject_unknown_params(request.query_params, set())
        notification = notification_get(
            merchant_id=request.user.pk, notification_id=notification_id
        )
        return Response(NotificationDetailOutputSerializer(notification).data)


class NotificationResendApi(APIView):
    """``POST /api/v1/notifications/{id}/resend``: deliver it again now, with the same webhook-id
    and body (the merchant deduplicates by webhook-id); its retry schedule starts over."""

    @extend_schema(
        operation_id="notifications_resend",
        parameters=[ID_PARAMETER],
        request=None,
        responses={
            202: NotificationDetailOutputSerializer,
            **error_responses(
                {
                    serializers.ValidationError: NO_QUERY_PARAMETERS,
                    NotFound: NOT_FOUND,
                    Conflict: "the notification's endpoint is disabled (a 410 Gone, or an operator): ask paysys to enable it",
                }
            ),
        },
    )
    def post(self, request, notification_id: str):
        reject_unknown_params(request.query_params, set())
        notification = notification_get(
            merchant_id=request.user.pk, notification_id=notification_id
        )
        notification = notification_resend(notification)
        return Response(
            NotificationDetailOutputSerializer(notification).data, status=status.HTTP_202_ACCEPTED
        )
