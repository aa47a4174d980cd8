"""The one way list endpoints page: newest first, by cursor (stable while rows are added), `?limit=`."""

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class NewestFirst(CursorPagination):
    ordering = "-id"
    page_size = 100
    max_page_size = 500
    page_size_query_param = "limit"

    def get_page_size(self, request):
        # DRF falls back to the default page size for a `limit` it cannot read; the caller would not know.
        given = request.query_params.get(self.page_size_query_param)
        if given is None:
            return self.page_size
        # isascii: "²".isdigit() is true, and int() refuses it; a few digits: int() refuses 4,300 and more.
        if not (given.isascii() and given.isdigit() and len(given) <= 6) or int(given) < 1:
            raise ValidationError({"limit": [f"A whole number from 1 to {self.max_page_size}."]})
        return min(int(given), self.max_page_size)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = (
                    f"Rows per page, {self.page_size} unless given; more than "
                    f"{self.max_page_size} is read as {self.max_page_size}."
                )
                parameter["schema"].update({"minimum": 1})
        return parameters

    def decode_cursor(self, request):
        # DRF answers 404 to a cursor it cannot read; it is the input that is wrong, not the list missing.
        try:
            cursor = super().decode_cursor(request)
            # DRF decodes any base64 it is given; the position goes into `id < position` as it is.
            if cursor is not None and cursor.position is not None:
                position = str(cursor.position)
                if not (position.isascii() and position.isdigit() and len(position) <= 19):
                    raise NotFound()
            return cursor
        except NotFound:
            raise ValidationError(
                {"cursor": ["Not a cursor this API gave: follow a page's `next` or `previous` link."]}
            ) from None


def paginated(view, request, queryset, serializer_class):
    """The page of `queryset` the request asks for, serialized, as a paginated response.

    The view names its `pagination_class` (NewestFirst), so that the OpenAPI description documents the
    page object and its `cursor` and `limit` parameters (apps/core/openapi.py).
    """
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)
