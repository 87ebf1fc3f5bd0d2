from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from paysys import bank
from paysys.api.exceptions import ApiError
from paysys.gateway.services import bank_notify_receive


class BankSignatureInvalid(ApiError):
    status_code = 401
    code = "invalid_signature"


class BankNotifyApi(APIView):
    """``POST /gateway/bank/notify``: the bank's signed payment result. Store it, acknowledge it.

    Every correctly signed body is stored before it is read; one that cannot be read is answered
    400 and kept, rejected, for a human (admin, ``manage.py reprocess_bank_notifies``).

    A notify repeating a stored bank_trade_no is acknowledged as a duplicate; when its content
    differs the stored notify is flagged for a human and the answer says ``"flagged": true``.

    Nothing else happens here: the gateway must keep accepting notifies while orders is down.
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(exclude=True)
    def post(self, request):
        raw_body = request.body
        signature = request.headers.get(bank.SIGNATURE_HEADER, "")
        if not bank.signature_valid(raw_body, signature):
            raise BankSignatureInvalid("missing or invalid bank signature")
        stored = bank_notify_receive(raw_body=raw_body, signature=signature)
        body = {
            "result": "success",
            "bank_trade_no": stored.notify.bank_trade_no,
            "duplicate": not stored.created,
        }
        if stored.flagged:
            body["flagged"] = True  # acknowledged all the same: a human resolves it, not a resend
        return Response(body)
