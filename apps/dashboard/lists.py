"""What every Rowbell admin page shares: lists that stay fast on large tables, the staff user as the
actor of every action, and an action's buttons on the change page of one object."""

from __future__ import annotations

from functools import cached_property

from django.contrib import admin
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme

COUNT_CAP = 10_000


class BoundedCountPaginator(Paginator):
    """Counts at most COUNT_CAP + 1 rows (`SELECT count(*) FROM (... LIMIT n)`), so a list of the biggest
    tables never counts the whole table; past the cap the list says "more than 10,000" and pages on."""

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[: COUNT_CAP + 1].count()


def actor_of(request) -> str:
    return f"staff:{request.user.get_username()}"


def back_to(request):
    """Where an action posted from an object's page returns: that page (`_next`), when it is ours."""
    target = request.POST.get("_next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return HttpResponseRedirect(target)
    return None


class ReadOnlyRows:
    """Rows are created and changed through the API, the engine and the actions, whose services validate,
    audit and enqueue; a form saving a row directly would do none of that. Nothing is deleted from here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class OperatorAdmin(ReadOnlyRows, admin.ModelAdmin):
    """Read-mostly pages whose actions call the same services as the API, name the staff user and
    enqueue their network I/O."""

    paginator = BoundedCountPaginator
    show_full_result_count = False
    change_form_template = "dashboard/change_form.html"
    # (action name, label) pairs offered as buttons on an object's page, when the user may run them.
    object_actions: tuple[tuple[str, str], ...] = ()

    def _perm(self, request, codename: str) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        allowed = self.get_actions(request)
        extra_context = {**(extra_context or {}),
                         "object_actions": [(name, label) for name, label in self.object_actions if name in allowed]}
        return super().change_view(request, object_id, form_url, extra_context)


class CreatedFilter(admin.SimpleListFilter):
    """Rows created within the last hour, day, week or month: the dashboard's ranges, so that its links
    land on the same rows."""

    title = "created"
    parameter_name = "created"
    field = "created_at"

    def lookups(self, request, model_admin):
        from .selectors import RANGES

        return [(r.key, r.label) for r in RANGES.values()]

    def queryset(self, request, queryset):
        from django.utils import timezone

        from .selectors import RANGES

        span = RANGES.get(self.value() or "")
        if span is None:
            return queryset
        return queryset.filter(**{f"{self.field}__gte": timezone.now() - span.span})
