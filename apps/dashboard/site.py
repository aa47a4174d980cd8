"""Rowbell's admin site: the operators' console. Its home page is the dashboard; the review queue of
held sandbox deliveries sits beside the model pages."""

from __future__ import annotations

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path


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
