from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination

MAX_ID = 2**63 - 1


class NewestFirstPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def paginate_queryset(self, queryset, request, view=None):
        self._model = queryset.model  # decode_cursor checks positions against the ordering field
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        """A cursor is opaque but client-held: anything that is not one this API made (bad base64,
        a position that is not a value of the ordering field) is a 400 naming ``cursor``, never a
        404 or a 500."""
        invalid = ValidationError({"cursor": "invalid cursor: use a next or previous link as given"})
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise invalid from None
        if cursor is not None and cursor.position is not None and not self._position_valid(cursor.position):
            raise invalid
        return cursor

    def _position_valid(self, position: str) -> bool:
        ordering = self.ordering if isinstance(self.ordering, str) else self.ordering[0]
        field = self._model._meta.get_field(ordering.lstrip("-"))
        if isinstance(field, (models.AutoField, models.BigAutoField, models.IntegerField)):
            return position.isascii() and position.isdigit() and int(position) <= MAX_ID
        try:
            return field.to_python(position) is not None
        except (DjangoValidationError, ValueError, OverflowError):
            return False
