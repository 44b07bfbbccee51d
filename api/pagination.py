"""Cursor pagination of the API's lists: newest first, stable under inserts."""

from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination

from api.errors import INVALID_REQUEST, ApiError


class NewestFirstPagination(CursorPagination):
    """Pages of up to `page_size` rows by `created_at`, newest first.

    The id breaks ties between rows created in the same microsecond, so
    no row is skipped or repeated between pages.
    """

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except NotFound:
            raise ApiError(
                400,
                INVALID_REQUEST,
                "The cursor is invalid. Use the `next` or `previous` URL of a "
                "response as it is.",
                field=self.cursor_query_param,
            ) from None

    def get_page_size(self, request):
        size = request.query_params.get(self.page_size_query_param)
        if size is not None:
            if not size.isdigit() or not 1 <= int(size) <= self.max_page_size:
                raise ApiError(
                    400,
                    INVALID_REQUEST,
                    f"Invalid page_size {size!r}: expected a whole number from 1 "
                    f"to {self.max_page_size}.",
                    field=self.page_size_query_param,
                )
        return super().get_page_size(request)
