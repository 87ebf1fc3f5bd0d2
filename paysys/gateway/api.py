import json

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from paysys import bank
from paysys.api.exceptions import ApiError
from paysys.api.fields import StrictIntegerField, TextField
from paysys.gateway.services import bank_notify_store


class BankSignatureInvalid(ApiError):
    status_code = 401
    code = "invalid_signature"


class BankNotifyApi(APIView):
    """``POST /gateway/bank/notify``: the bank's signed payment result. Store it, acknowledge it.

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
            payload = json.loads(raw_body)
        except (UnicodeDecodeError, ValueError):
            raise ApiError("body is not JSON", code="malformed") from None
        if not isinstance(payload, dict):
            raise ApiError("body must be a JSON object", code="malformed")
        data = self.InputSerializer(data=payload)
        data.is_valid(raise_exception=True)
        notify, created = bank_notify_store(data=data.validated_data, raw_body=raw_body, signature=signature)
        return Response({"result": "success", "bank_trade_no": notify.bank_trade_no, "duplicate": not created})
