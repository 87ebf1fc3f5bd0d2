"""The bank simulator's HTTP side: what an outside bank shows payers and answers platforms.

Plain Django views (csrf_exempt: these are another party's pages, not the platform's).
Errors are JSON ``{"error": {"code", "message"}}`` like the platform's, or a page for browsers.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from paysys import bank
from paysys.api.exceptions import ApiError, error_body, status_for
from paysys.api.parsers import loads_strict
from paysys.core.errors import DomainError
from paysys.sandbox import services
from paysys.sandbox.control import require_sandbox_token
from paysys.sandbox.models import BankRefund
from paysys.sandbox.selectors import bank_payment_get

FORM_CONTENT_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}
# minor units per major unit, by currency exponent (ISO 4217); 2 unless listed
ZERO_DECIMAL_CURRENCIES = {"JPY", "KRW", "VND"}


def major_units(amount: int, currency: str) -> str:
    """1234 CNY -> "12.34" (amounts are integers in minor units)."""
    if currency in ZERO_DECIMAL_CURRENCIES:
        return str(amount)
    return f"{amount // 100}.{amount % 100:02d}"


def wants_html(request) -> bool:
    """The page's Pay button (a browser form post) gets a page back; programs get JSON."""
    accept = request.headers.get("Accept", "")
    if "application/json" in accept:
        return False
    return "text/html" in accept or request.content_type in FORM_CONTENT_TYPES


def back_url(request) -> str:
    """The merchant page the payer came from (as a bank's "return to merchant" link), if known."""
    referer = request.headers.get("Referer", "")
    parts = urlsplit(referer)
    if parts.scheme not in ("http", "https") or parts.path == request.path:
        return ""
    return referer


def error_json(exc: DomainError) -> JsonResponse:
    return JsonResponse(error_body(exc.code, exc.message, exc.fields), status=status_for(exc))


@method_decorator(csrf_exempt, name="dispatch")
class BankPayView(View):
    """``GET /sandbox/bank/pay/<token>``: the pay page. ``POST``: pay (the page's button, or a
    program with optional JSON test options ``{"duplicates", "delay", "hold"}``, which need the
    sandbox token)."""

    def get(self, request, token: str):
        try:
            order = services.pay_token_read(token)
        except DomainError as exc:
            return self.page(request, None, error=exc)
        payment = bank_payment_get(out_trade_no=order["out_trade_no"])
        refusal = (
            services.platform_refusal(order)
            if payment is None and not services.pay_token_expired(order)
            else None
        )
        if refusal is not None:
            return self.page(
                request, order, error=refusal, status=200
            )  # a page to read, not a failed request
        return self.page(request, order, payment=payment, already_paid=payment is not None)

    def post(self, request, token: str):
        html, order = wants_html(request), None
        try:
            order = services.pay_token_read(token)
            options = (
                services.PayOptions()
                if html
                else services.pay_options_parse(self.json_body(request))
            )
            if options != services.PayOptions():
                require_sandbox_token(request)  # test options steer the bank's notifies
            payment, _ = services.bank_pay(order=order, options=options)
        except DomainError as exc:
            return self.page(request, order, error=exc) if html else error_json(exc)
        if html:
            return self.page(request, order, payment=payment)
        return JsonResponse(
            {
                "bank_trade_no": payment.bank_trade_no,
                "out_trade_no": payment.out_trade_no,
                "amount": payment.amount,
                "currency": payment.currency,
                "status": payment.status,
                "paid_at": payment.paid_at.isoformat(),
            }
        )

    @staticmethod
    def json_body(request) -> dict:
        if not request.body.strip():
            return {}
        try:
            return loads_strict(request.body)
        except ValueError:  # UnicodeDecodeError, NaN or infinities, nesting too deep included
            raise ApiError("the body is not JSON", code="malformed") from None

    @staticmethod
    def page(
        request,
        order: dict | None,
        *,
        payment=None,
        error: DomainError | None = None,
        already_paid: bool = False,
        status: int | None = None,
    ):
        already_paid = already_paid or getattr(error, "code", "") == "already_paid"
        context = {
            "order": order,
            "payment": payment,
            "error": error,
            "already_paid": already_paid,
            "back_url": back_url(request),
        }
        if order is not None:
            context["amount_major"] = major_units(order["amount"], order["currency"])
            context["expired"] = payment is None and services.pay_token_expired(order)
        return render(
            request,
            "sandbox/bank_pay.html",
            context,
            status=status or (status_for(error) if error else 200),
        )


@csrf_exempt
@require_POST
def bank_release(request):
    """``POST /sandbox/bank/release``: send every held notify, the latest payment first."""
    try:
        require_sandbox_token(request)
    except DomainError as exc:
        return error_json(exc)
    released = services.notifies_release()
    return JsonResponse(
        {"released": len(released), "out_trade_nos": [p.out_trade_no for p in released]}
    )


@require_GET
def bank_payment_query(request, out_trade_no: str):
    """``GET /sandbox/bank/payments/<out_trade_no>``: what the bank knows, signed like a notify."""
    payment = bank_payment_get(out_trade_no=out_trade_no)
    if payment is None:
        document = {
            "status": "NOT_FOUND",
            "out_trade_no": out_trade_no,
            **error_body("not_found", "no payment for this order"),
        }
        status = 404
    else:
        document, status = services.payment_document(payment), 200
    body, signature = services.signed_body(document)
    return HttpResponse(
        body,
        status=status,
        content_type="application/json",
        headers={bank.SIGNATURE_HEADER: signature},
    )


@csrf_exempt
def bank_refunds(request, refund_no: str = ""):
    """``POST /sandbox/bank/refunds/``: take a refund (signed by the platform);
    ``GET /sandbox/bank/refunds/<refund_no>``: what the bank decided, signed."""
    if request.method == "POST" and not refund_no:
        if not bank.signature_valid(
            request.body,
            request.headers.get(bank.SIGNATURE_HEADER),
            secret=settings.SANDBOX_BANK_SECRET,
        ):
            return JsonResponse(
                error_body("invalid_signature", "sign the body with the shared secret"), status=401
            )
        try:
            refund = services.bank_refund(loads_strict(request.body))
        except ValueError:
            return JsonResponse(error_body("malformed", "the body is not JSON"), status=400)
        except DomainError as exc:
            return error_json(exc)
        document, status = {"refund_no": refund.refund_no, "status": "PROCESSING"}, 200
    elif request.method == "GET" and refund_no:
        refund = BankRefund.objects.filter(refund_no=refund_no).first()
        if refund is None:
            document, status = (
                {"refund_no": refund_no, **error_body("not_found", "no such refund")},
                404,
            )
        else:
            document, status = services.refund_document(refund), 200
    else:
        return JsonResponse(
            error_body("method_not_allowed", "POST the refund, GET it by number"), status=405
        )
    body, signature = services.signed_body(document)
    return HttpResponse(
        body,
        status=status,
        content_type="application/json",
        headers={bank.SIGNATURE_HEADER: signature},
    )
