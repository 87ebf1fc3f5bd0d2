from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from paysys import bank
from paysys.api.exceptions import ApiError
from paysys.api.fields import StrictIntegerField, TextField
from paysys.api.parsers import loads_strict
from paysys.gateway.services import bank_notify_store


class BankSignatureInvalid(ApiError):
    status_code = 401
    code = "invalid_signature"


class BankNotifyApi(APIView):
    """``POST /gateway/bank/notify``: the bank's signed payment result. Store it, acknowledge it.

    A notify repeating a stored bank_trade_no is acknowledged as a duplicate; when its content
    differs the stored notify is flagged for a human and the answer says ``"flagged": true``.

    Nothing else happens here: the gateway must keep accepting notifies while orders is down.
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    class InputSerializer(serializers.Serializer):
        bank_trade_no = TextField(min_length=1, max_length=64)
        out_trade_no = TextField(min_length=1, max_length=64)
        amount = StrictIntegerField(min_value=1, max_value=10**15)
        currency = TextField(min_length=3, max_length=3)
        status = serializers.ChoiceField(choices=["SUCCESS"])
        paid_at = serializers.DateTimeField()

    @extend_schema(exclude=True)
    def post(self, request):
        raw_body = request.body
        signature = request.headers.get(bank.SIGNATURE_HEADER, "")
        if not bank.signature_valid(raw_body, signature):
            raise BankSignatureInvalid("missing or invalid bank signature")
        try:
            # json.loads would also take UTF-16 or UTF-32 bytes; the bank speaks UTF-8 (RFC 8259)
            text = raw_body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError("body is not UTF-8 text", code="malformed") from None
        try:
            # a leading BOM is ignored, as json.loads of the bytes did; the stored text keeps it
            payload = loads_strict(text.removeprefix("\ufeff"))
        except ValueError:
            raise ApiError("body is not JSON", code="malformed") from None
        if not isinstance(payload, dict):
            raise ApiError("body must be a JSON object", code="malformed")
        data = self.InputSerializer(data=payload)
        data.is_valid(raise_exception=True)
        stored = bank_notify_store(data=data.validated_data, raw_body=text, signature=signature)
        body = {"result": "success", "bank_trade_no": stored.notify.bank_trade_no, "duplicate": not stored.created}
        if stored.flagged:
            body["flagged"] = True  # acknowledged all the same: a human resolves it, not a resend
        return Response(body)
