from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination


class NewestFirstPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def decode_cursor(self, request):
        # the cursor is client input: its position must be an id, or the query fails with a 500
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                valid = 0 <= int(cursor.position) < 2**63
            except ValueError:
                valid = False
            if not valid:
                raise NotFound(self.invalid_cursor_message)
        return cursor
