"""The one way list endpoints page: newest first, by cursor (stable while rows are added), `?limit=`."""

from rest_framework.pagination import CursorPagination


class NewestFirst(CursorPagination):
    ordering = "-id"
    page_size = 100
    max_page_size = 500
    page_size_query_param = "limit"


def paginated(view, request, queryset, serializer_class):
    """The page of `queryset` the request asks for, serialized, as a paginated response."""
    paginator = NewestFirst()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)
