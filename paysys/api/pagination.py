import datetime
from urllib.parse import parse_qs, urlsplit

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from paysys.api.fields import QueryIntegerField, reject_unknown_params

MAX_ID = 2**63 - 1


class NewestFirstPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def paginate_queryset(self, queryset, request, view=None):
        self._model = queryset.model  # decode_cursor checks positions against the ordering field
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data):
        """DRF's page plus the bare cursors, so a client passes ``cursor`` without parsing a URL."""
        next_link, previous_link = self.get_next_link(), self.get_previous_link()
        return Response(
            {
                "next": next_link,
                "previous": previous_link,
                "next_cursor": self._cursor_in(next_link),
                "previous_cursor": self._cursor_in(previous_link),
                "results": data,
            }
        )

    def _cursor_in(self, link: str | None) -> str | None:
        if link is None:
            return None
        return parse_qs(urlsplit(link).query, keep_blank_values=True)[self.cursor_query_param][0]

    def decode_cursor(self, request):
        """A cursor is opaque but client-held: anything that is not one this API made (bad base64,
        unknown keys, a position that is not a value of the ordering field) is a 400 naming
        ``cursor``, never a 404 or a 500, and never silently the first page."""
        invalid = ValidationError(
            {"cursor": "invalid cursor: use a next or previous link as given"}
        )
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise invalid from None
        if cursor is None:
            return None
        # DRF's decoding skips what is not base64 and ignores unknown keys, so garbage read as
        # page 1: a cursor counts only if this API would have written it exactly so
        made = self._cursor_in(self.encode_cursor(cursor))
        if made != request.query_params[self.cursor_query_param]:
            raise invalid
        if cursor.position is not None and not self._position_valid(cursor.position):
            raise invalid
        return cursor

    def _position_valid(self, position: str) -> bool:
        ordering = self.ordering if isinstance(self.ordering, str) else self.ordering[0]
        field = self._model._meta.get_field(ordering.lstrip("-"))
        if isinstance(field, (models.AutoField, models.BigAutoField, models.IntegerField)):
            # the length first: int() refuses a string of over 4,300 digits (ValueError)
            return (
                position.isascii()
                and position.isdigit()
                and len(position) <= len(str(MAX_ID))
                and int(position) <= MAX_ID
            )
        try:
            value = field.to_python(position)
            if isinstance(value, datetime.datetime) and value.tzinfo is not None:
                value.astimezone(datetime.UTC)  # 9999-12-31T23:59:59-12:00 has no UTC time
            return value is not None
        except (DjangoValidationError, ValueError, OverflowError):
            return False


# --- a list endpoint: its query, its page, its schema -------------------------------------------


class PageQuerySerializer(serializers.Serializer):
    """The paging parameters every list endpoint takes; its filter serializer extends this."""

    cursor = serializers.CharField(
        required=False, help_text="a previous page's next_cursor or previous_cursor"
    )
    limit = QueryIntegerField(
        required=False, min_value=1, max_value=NewestFirstPagination.max_page_size
    )


# what a list endpoint's 400 means (its schema says so)
LIST_QUERY_REFUSED = "an unknown or malformed query parameter, or a cursor this API did not make"


def list_query(request, query_serializer: type[PageQuerySerializer]) -> dict:
    """A list endpoint's validated filters, without the paging parameters: an unknown parameter
    is a 400, and the query is read as a plain dict ("" is a value, not "omitted")."""
    reject_unknown_params(request.query_params, set(query_serializer().fields))
    query = query_serializer(data=request.query_params.dict())
    query.is_valid(raise_exception=True)
    return {
        name: value
        for name, value in query.validated_data.items()
        if name not in PageQuerySerializer._declared_fields
    }


def paginated_response(
    request,
    view,
    queryset,
    serialize,
    pagination: type[NewestFirstPagination] = NewestFirstPagination,
):
    """One page of ``queryset``, its items turned into JSON by ``serialize(page)``."""
    paginator = pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serialize(page))


def page_serializer(item: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The schema of a page of ``item``: ``{next, previous, next_cursor, previous_cursor, results}``,
    named after the item (OrderOutputSerializer -> OrderPageSerializer)."""
    return type(
        item.__name__.replace("OutputSerializer", "PageSerializer"),
        (serializers.Serializer,),
        {
            "next": serializers.URLField(
                allow_null=True, help_text="the next page's URL; null on the last page"
            ),
            "previous": serializers.URLField(
                allow_null=True, help_text="the previous page's URL; null on the first page"
            ),
            "next_cursor": serializers.CharField(
                allow_null=True,
                help_text="the next page: pass it as ?cursor=; null on the last page",
            ),
            "previous_cursor": serializers.CharField(
                allow_null=True,
                help_text="the previous page: pass it as ?cursor=; null on the first page",
            ),
            "results": item(many=True),
        },
    )
