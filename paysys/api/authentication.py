from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from paysys.core.models import Merchant
from paysys.core.services import merchant_by_api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <api_key>``; request.user is the merchant."""

    keyword = "Bearer"
    refusal = "missing or invalid API key, or the merchant is frozen"  # the schema's 401

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            raise exceptions.NotAuthenticated(
                "no API key: send the header 'Authorization: Bearer <api_key>'"
            )
        scheme, _, api_key = header.partition(" ")
        if scheme != self.keyword or not api_key.strip():
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <api_key>'")
        merchant = merchant_by_api_key(api_key.strip())
        if merchant is None:
            raise exceptions.AuthenticationFailed("invalid API key")
        if not merchant.is_active:
            raise exceptions.AuthenticationFailed("merchant is frozen")
        return merchant, api_key

    def authenticate_header(self, request):
        return self.keyword


class IsMerchant(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, Merchant)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = ApiKeyAuthentication
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "the merchant's API key"}
