from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination

MAX_ID = 2**63 - 1


class NewestFirstPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def decode_cursor(self, request):
        """A cursor is opaque but client-held: anything that is not one this API made (bad base64,
        a position that is not an id) is a 400 naming ``cursor``, never a 404 or a 500."""
        invalid = ValidationError({"cursor": "invalid cursor: use a next or previous link as given"})
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise invalid from None
        if cursor is not None and cursor.position is not None:
            position = cursor.position
            if not (position.isascii() and position.isdigit() and int(position) <= MAX_ID):
                raise invalid
        return cursor
