"""What every Rowbell admin page shares: lists that stay fast on large tables, the staff user as the
actor of every action, and an action's buttons on the change page of one object."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

from django.contrib import admin
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

COUNT_CAP = 10_000


# The time ranges the dashboard shows and the lists filter by (the same ones, so its links land on the same rows).
@dataclass(frozen=True)
class Range:
    key: str
    label: str
    span: timedelta
    bucket: timedelta


RANGES = {
    r.key: r
    for r in (
        Range("1h", "Last hour", timedelta(hours=1), timedelta(minutes=2)),
        Range("24h", "Last 24 hours", timedelta(hours=24), timedelta(hours=1)),
        Range("7d", "Last 7 days", timedelta(days=7), timedelta(hours=6)),
        Range("30d", "Last 30 days", timedelta(days=30), timedelta(days=1)),
    )
}


class BoundedCountPaginator(Paginator):
    """Counts at most COUNT_CAP + 1 rows (`SELECT count(*) FROM (... LIMIT n)`), so a list of the biggest
    tables never counts the whole table. Past the cap the list says "more than 10,000" and any page
    number is served (`?p=`): the last page is simply shorter, or empty."""

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[: COUNT_CAP + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > COUNT_CAP

    def validate_number(self, number):
        if not self.capped:
            return super().validate_number(number)
        try:
            number = int(number)
        except (TypeError, ValueError):
            return 1
        return max(number, 1)

    def page(self, number):
        if not self.capped:
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom : bottom + self.per_page], number, self)


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
    # Facet counts ("Show counts") would aggregate the whole table once per filter.
    show_facets = admin.ShowFacets.NEVER
    change_form_template: str | None = "dashboard/change_form.html"
    # Searches are exact matches on these fields (an id, a message id...), each converted to the field's
    # type first, so that they use an index instead of matching a pattern against every row.
    exact_search_fields: tuple[str, ...] = ()

    def get_search_results(self, request, queryset, search_term):
        if not self.exact_search_fields:
            return super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(exact_match(self.model, self.exact_search_fields, term)), False

    @admin.display(description="product / organization", ordering="product__name")
    def tenant(self, obj) -> str:
        """Who a row belongs to, in one column: its organization (named with its product), else its product.
        The list reads them with the row (list_select_related: product, organization__product)."""
        return str(obj.organization) if obj.organization_id else str(obj.product)

    # (action name, label) pairs offered as buttons on an object's page, when the user may run them and they
    # apply to the object as it is (object_actions_for).
    object_actions: tuple[tuple[str, str], ...] = ()
    # {action: (list filter parameter, the values it applies to)}: a list filtered to other values (runs that
    # completed, deliveries that were sent) does not offer the action, which would refuse every row.
    action_applies_to: dict[str, tuple[str, tuple[str, ...]]] = {}

    def object_actions_for(self, obj) -> list[tuple[str, str]]:
        """The (action, label) buttons `obj`'s page offers: those of object_actions that apply to it as it is,
        by the rule its service refuses by. Every one of them, unless a page says otherwise."""
        return list(self.object_actions)

    def object_action_notes(self, obj) -> list[str]:
        """Why actions one might expect on `obj`'s page are not offered (shown beside its buttons)."""
        return []

    def get_actions(self, request):
        actions = super().get_actions(request)
        for name, (parameter, values) in self.action_applies_to.items():
            chosen = request.GET.get(parameter)
            if chosen is not None and chosen not in values:
                actions.pop(name, None)
        return actions

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and self.object_actions:
            allowed = self.get_actions(request)
            context["object_actions"] = [(n, label) for n, label in self.object_actions_for(obj) if n in allowed]
            context["object_action_notes"] = self.object_action_notes(obj) if allowed else []
        return super().render_change_form(request, context, add, change, form_url, obj)


class CreatedFilter(admin.SimpleListFilter):
    """Rows created within the last hour, day, week or month: the dashboard's ranges, so that its links
    land on the same rows."""

    title = "created"
    parameter_name = "created"
    field = "created_at"

    def lookups(self, request, model_admin):
        return [(r.key, r.label) for r in RANGES.values()]

    def queryset(self, request, queryset):
        from django.utils import timezone

        span = RANGES.get(self.value() or "")
        if span is None:
            return queryset
        return queryset.filter(**{f"{self.field}__gte": timezone.now() - span.span})


def exact_match(model, fields, term: str):
    """Q: `term` equals one of `fields`, for those whose type it fits (a UUID, an integer...); matches
    nothing when it fits none."""
    from django.core.exceptions import ValidationError
    from django.db.models import Q

    query = Q(pk__in=[])
    for name in fields:
        field = model._meta.get_field(name)
        if field.is_relation:
            field = field.target_field
        try:
            value = field.to_python(term)
            field.run_validators(value) if value is not None else None
        except (ValidationError, ValueError, TypeError):
            continue
        if value is not None:
            query |= Q(**{name: value})
    return query


class FixedChoicesFilter(admin.SimpleListFilter):
    """A filter whose options are a known set (not `SELECT DISTINCT` over the whole table)."""

    field = ""
    known: tuple[str, ...] = ()

    def lookups(self, request, model_admin):
        return [(c, c) for c in self.known]

    def queryset(self, request, queryset):
        if self.value() in self.known:
            return queryset.filter(**{self.field: self.value()})
        return queryset


def fixed_filter(title: str, field: str, choices) -> type[FixedChoicesFilter]:
    return type(
        f"{field.title()}Filter",
        (FixedChoicesFilter,),
        {"title": title, "parameter_name": field, "field": field, "known": tuple(choices)},
    )


def clipped(text: str):
    """A long value (an error, a reason) in a list cell: its first lines, the whole of it in the tooltip. The
    object's page shows it whole."""
    return format_html('<span class="rowbell-clip" title="{}">{}</span>', text, text) if text else text


def masked_json(value) -> str:
    """A stored JSON document as the admin shows one, with its sealed secrets masked
    (apps.core.masking.sealed_masked): a recipient's chat webhook URL is never on a page."""
    from apps.core import exactjson
    from apps.core.masking import sealed_masked

    return exactjson.dumps(sealed_masked(value), ensure_ascii=False, default=str)
