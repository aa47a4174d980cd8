"""Rowbell's admin site: the operators' console. Its home page is the dashboard; the review queue of
held sandbox deliveries sits beside the model pages, first in the sidebar, with how many wait."""

from __future__ import annotations

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from apps.core.admin_lists import COUNT_CAP


class RowbellAdminSite(admin.AdminSite):
    site_header = "Rowbell operations"
    site_title = "Rowbell"
    index_title = "Dashboard"

    def get_urls(self):
        from . import describe, views

        return [
            path("review/", self.admin_view(views.review_queue), name="review_queue"),
            path("describe/", self.admin_view(describe.describe_workflow), name="describe_workflow"),
            *super().get_urls(),
        ]

    def get_app_list(self, request, app_label=None):
        """The models' sections, and first a "Review" section leading to the review queue, for staff who may
        see deliveries."""
        apps = super().get_app_list(request, app_label)
        if app_label is None and request.user.has_perm("deliveries.view_delivery"):
            apps.insert(0, self._review_section(request))
        return apps

    def _review_section(self, request) -> dict:
        """The review queue as the app lists show a section (see admin/app_list.html), with the number of held
        deliveries, counted once per request."""
        from apps.deliveries.models import Delivery, DeliveryStatus

        held = getattr(request, "_rowbell_held", None)
        if held is None:
            held = request._rowbell_held = (
                Delivery.objects.filter(status=DeliveryStatus.HELD).order_by()[: COUNT_CAP + 1].count()
            )
        url = reverse(f"{self.name}:review_queue")
        # Counted as the lists count (over the held deliveries' partial index, never past COUNT_CAP + 1).
        shown = f"{COUNT_CAP:,}+" if held > COUNT_CAP else str(held)
        name = format_html(
            'Review queue <span class="rowbell-count{}" id="sidebar-held" title="{} held for review">{}</span>',
            " attention" if held else "",
            shown,
            shown,
        )
        return {
            "name": "Review",
            "app_label": "review",
            "app_url": url,
            "has_module_perms": True,
            "models": [
                {
                    "model": None,
                    "name": name,
                    "object_name": "ReviewQueue",
                    "perms": {"view": True, "add": False, "change": False, "delete": False},
                    "admin_url": url,
                    "add_url": None,
                    "view_only": True,
                }
            ],
        }

    def index(self, request, extra_context=None):
        from .selectors import home_figures_cached

        # The figures are deliveries' and runs' (and connections'): shown to staff who may see those.
        may_see = request.user.has_perms(["deliveries.view_delivery", "runs.view_run", "connections.view_connection"])
        figures = (
            home_figures_cached(product_id=request.GET.get("product") or None, range_key=request.GET.get("range") or "")
            if may_see
            else None
        )
        context = {
            **self.each_context(request),
            "title": self.index_title,
            "subtitle": None,
            "app_list": self.get_app_list(request),
            "figures": figures,
            **(extra_context or {}),
        }
        request.current_app = self.name
        return TemplateResponse(request, "dashboard/home.html", context)
