"""The two-phase message API over HTTP, for producers that cannot write the outbox themselves.

An outside service prepares a message before its own local transaction, then confirms it after
commit or discards it after rollback. If neither comes in time, the check-back subsystem asks
``check_back_url`` (docs/architecture.md, "Reliable messages"). Callers authenticate with the
shared service token, never with a merchant API key.

    POST /api/v1/messages                       prepare   -> 201 PREPARED
    POST /api/v1/messages/{message_id}/confirm  confirm   -> 200 (idempotent)
    POST /api/v1/messages/{message_id}/discard  discard   -> 200 DISCARDED
    GET  /api/v1/messages/{message_id}          the state of each consumer's row
"""

from __future__ import annotations

import hmac
import uuid

from django.conf import settings
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema
from rest_framework import authentication, exceptions, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from paysys.api.exceptions import ApiError
from paysys.api.fields import StrictInputSerializer, TextField, no_surrogates, reject_unknown_params
from paysys.api.schema import NO_QUERY_PARAMETERS, error_responses
from paysys.core.errors import Conflict, NotFound
from paysys.core.netguard import check_url
from paysys.messaging import outbox
from paysys.messaging.models import Message
from paysys.messaging.selectors import message_rows, overall_status

# Messages from HTTP producers live in core's outbox: the producer has no alias of its own.
ALIAS = "default"
# MariaDB's JSON functions (the JSON_VALID check on the column) stop at 32 levels of nesting.
MAX_PAYLOAD_DEPTH = 20

Status = Message.Status


# --- authentication: one shared service token ----------------------------------------------


class MessagingService:
    """The authenticated caller: a trusted internal producer, not a merchant."""

    is_authenticated = True

    def __str__(self) -> str:
        return "messaging service"


class ServiceTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <settings.MESSAGING_SERVICE_TOKEN>``.

    An empty configured token disables the API (MessagingApi answers 404 before authenticating),
    never letting an empty bearer in.
    """

    keyword = "Bearer"
    refusal = "missing or invalid service token"  # the schema's 401

    def authenticate(self, request):
        expected = settings.MESSAGING_SERVICE_TOKEN
        if not expected:  # the views refuse first; an empty token must never match either
            raise NotFound("not found")
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme != self.keyword or not token:
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <service token>'")
        if not hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8")):
            raise exceptions.AuthenticationFailed("invalid service token")
        return MessagingService(), None

    def authenticate_header(self, request):
        return f'{self.keyword} realm="messaging"'


class IsMessagingService(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, MessagingService)


class ServiceTokenScheme(OpenApiAuthenticationExtension):
    target_class = ServiceTokenAuthentication
    name = "serviceToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "the messaging service token (MESSAGING_SERVICE_TOKEN)",
        }


class MessagingApi(APIView):
    authentication_classes = [ServiceTokenAuthentication]
    permission_classes = [IsMessagingService]
    # trusted internal callers; failed authentication never reaches a throttle anyway
    throttle_classes: list = []

    def initial(self, request, *args, **kwargs):
        # off without a token: not there at all (404, and absent from the schema), not a 503,
        # which would mean "try again later"
        if not settings.MESSAGING_SERVICE_TOKEN:
            raise NotFound("not found")
        super().initial(request, *args, **kwargs)


def hide_when_disabled(endpoints):
    """drf-spectacular preprocessing hook: the message API is in the schema only when it is on."""
    if settings.MESSAGING_SERVICE_TOKEN:
        return endpoints
    return [
        endpoint
        for endpoint in endpoints
        if not issubclass(getattr(endpoint[3], "cls", object), MessagingApi)
    ]


# --- reads ---------------------------------------------------------------------------------


def rows_or_404(message_id: uuid.UUID) -> list[Message]:
    rows = message_rows(message_id, using=ALIAS)
    if not rows:
        raise NotFound("no such message (never prepared, or discarded)")
    return rows


# --- serializers and schema ----------------------------------------------------------------


NOT_FOUND = "no such message (never prepared, or discarded)"


class NamedEnumField(serializers.CharField):
    """A string from a fixed set, documented as its own named enum component.

    Named here because spectacular names enums after the property: another "status" enum in
    the schema would otherwise rename the orders API's ``StatusEnum``.
    """

    enum_name = ""
    enum: list[str] = []


class MessageStatusField(NamedEnumField):
    enum_name = "MessageStatusEnum"
    enum = list(Status.values)


class DiscardedStatusField(NamedEnumField):
    enum_name = "MessageDiscardedStatusEnum"
    enum = ["DISCARDED"]


class NamedEnumFieldScheme(OpenApiSerializerFieldExtension):
    target_class = NamedEnumField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        component = ResolvedComponent(
            name=field.enum_name,
            type=ResolvedComponent.SCHEMA,
            object=field.enum_name,
            schema={"type": "string", "enum": field.enum},
        )
        auto_schema.registry.register_on_missing(component)
        return component.ref


class MessageStateSerializer(serializers.Serializer):
    message_id = serializers.UUIDField()
    status = MessageStatusField()


class MessageDiscardedSerializer(serializers.Serializer):
    message_id = serializers.UUIDField()
    status = DiscardedStatusField()


class MessageDeliverySerializer(serializers.Serializer):
    consumer = serializers.CharField()
    queue = serializers.CharField()
    status = MessageStatusField()
    send_count = serializers.IntegerField()
    consumed_at = serializers.DateTimeField(allow_null=True)


class MessageDetailSerializer(serializers.Serializer):
    message_id = serializers.UUIDField()
    topic = serializers.CharField()
    business_key = serializers.CharField()
    status = MessageStatusField(help_text="the least advanced state of its deliveries")
    created_at = serializers.DateTimeField()
    confirmed_at = serializers.DateTimeField(allow_null=True)
    deliveries = MessageDeliverySerializer(
        many=True, help_text="one per registered consumer of the topic"
    )


def message_detail(rows: list[Message]) -> dict:
    first = rows[0]
    return {
        "message_id": first.message_id,
        "topic": first.topic,
        "business_key": first.business_key,
        "status": overall_status(rows),
        "created_at": first.created_at,
        "confirmed_at": first.confirmed_at,
        "deliveries": rows,
    }


def _check_json_text(value, depth: int = 0) -> None:
    """Strings storable in every database, nesting within what MariaDB's JSON check accepts."""
    if depth > MAX_PAYLOAD_DEPTH:
        raise serializers.ValidationError(f"nested deeper than {MAX_PAYLOAD_DEPTH} levels")
    if isinstance(value, str):
        no_surrogates(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            no_surrogates(key)
            _check_json_text(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json_text(item, depth + 1)


# --- views: one per operation --------------------------------------------------------------


class MessagePrepareApi(MessagingApi):
    """``POST /api/v1/messages``: store a PREPARED message; it is sent only once confirmed."""

    class MessagePrepareInputSerializer(StrictInputSerializer):
        topic = TextField(min_length=1, max_length=100)
        payload = serializers.DictField(
            help_text="any JSON object; delivered to the consumers as is"
        )
        business_key = TextField(
            min_length=1,
            max_length=128,
            trim_whitespace=False,
            help_text="what the check-back asks about, e.g. the producer's transaction id",
        )
        check_back_url = serializers.URLField(
            max_length=512,
            help_text="asked with POST {message_id, business_key} when no confirm or discard comes in time; "
            'answers 2xx {"status": "COMMITTED" | "ROLLED_BACK" | "UNKNOWN"} at this URL itself '
            "(redirects are not followed) within MESSAGE_CHECK_BACK_TIMEOUT; its host must resolve, to public "
            "addresses only",
        )

        def validate_payload(self, value: dict) -> dict:
            _check_json_text(value)
            return value

        def validate_business_key(self, value: str) -> str:
            if not value.strip():
                raise serializers.ValidationError("must not be blank")
            return value

        def validate_check_back_url(self, value: str) -> str:
            if not value.lower().startswith(("http://", "https://")):
                raise serializers.ValidationError("must be an http(s) URL")
            # never the platform's own network (SSRF); the name must resolve now (a name that
            # resolves only later is a rebinding set-up), and is checked again on every ask
            check_url(value, field="check_back_url", must_resolve=True)
            return value

    @extend_schema(
        operation_id="messages_prepare",
        request=MessagePrepareInputSerializer,
        responses={
            201: MessageStateSerializer,
            **error_responses(
                {
                    serializers.ValidationError: "invalid fields, or an unknown query parameter",
                    ApiError: "the topic is not open to HTTP producers, or no consumer is registered for it",
                    Conflict: "business_key was prepared before with another payload",
                }
            ),
        },
    )
    def post(self, request):
        reject_unknown_params(request.query_params, set())
        data = self.MessagePrepareInputSerializer(
            data=request.data
        )  # paysys.api.parsers: no NaN, infinity, deep nesting
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values["topic"] not in settings.MESSAGING_HTTP_TOPICS:
            raise ApiError(
                f"topic {values['topic']!r} is not open to HTTP producers",
                code="topic_not_allowed",
                fields={"topic": "not listed in MESSAGING_HTTP_TOPICS"},
            )
        try:
            message_id = outbox.prepare(
                values["topic"],
                values["payload"],
                using=ALIAS,
                business_key=values["business_key"],
                check_back=values["check_back_url"],
            )
        except outbox.DuplicateBusinessKey as exc:
            raise Conflict(
                str(exc),
                code="business_key_reused",
                fields={"payload": "differs from the first prepare"},
            ) from None
        except outbox.UnknownTopic as exc:
            raise ApiError(
                str(exc),
                code="unknown_topic",
                fields={"topic": "no consumer is registered for this topic"},
            ) from None
        return Response(
            {"message_id": message_id, "status": Status.PREPARED}, status=status.HTTP_201_CREATED
        )


class MessageDetailApi(MessagingApi):
    """``GET /api/v1/messages/{message_id}``: where each consumer's copy of the message is."""

    @extend_schema(
        operation_id="messages_retrieve",
        responses={
            200: MessageDetailSerializer,
            **error_responses(
                {
                    serializers.ValidationError: NO_QUERY_PARAMETERS,
                    NotFound: NOT_FOUND,
                }
            ),
        },
    )
    def get(self, request, message_id: uuid.UUID):
        reject_unknown_params(request.query_params, set())
        return Response(MessageDetailSerializer(message_detail(rows_or_404(message_id))).data)


class MessageConfirmApi(MessagingApi):
    """``POST /api/v1/messages/{message_id}/confirm``: the producer committed; send it.

    Idempotent: confirming again (a retry after a lost response) answers the current state.
    """

    @extend_schema(
        operation_id="messages_confirm",
        request=None,
        responses={
            200: MessageStateSerializer,
            **error_responses(
                {
                    serializers.ValidationError: NO_QUERY_PARAMETERS,
                    NotFound: NOT_FOUND,
                }
            ),
        },
    )
    def post(self, request, message_id: uuid.UUID):
        reject_unknown_params(request.query_params, set())
        outbox.confirm(message_id, using=ALIAS)
        return Response(
            {"message_id": message_id, "status": overall_status(rows_or_404(message_id))}
        )


class MessageDiscardApi(MessagingApi):
    """``POST /api/v1/messages/{message_id}/discard``: the producer rolled back; drop it.

    A retry after the message is gone answers 404, which the producer may take as done.
    """

    @extend_schema(
        operation_id="messages_discard",
        request=None,
        responses={
            200: MessageDiscardedSerializer,
            **error_responses(
                {
                    serializers.ValidationError: NO_QUERY_PARAMETERS,
                    NotFound: NOT_FOUND,
                    Conflict: "the message was already confirmed: it cannot be discarded",
                }
            ),
        },
    )
    def post(self, request, message_id: uuid.UUID):
        reject_unknown_params(request.query_params, set())
        if outbox.discard(message_id, using=ALIAS):
            return Response({"message_id": message_id, "status": "DISCARDED"})
        current = overall_status(rows_or_404(message_id))
        raise Conflict(
            f"the message is {current}: only a PREPARED message can be discarded",
            code="not_prepared",
        )
