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
        from . import views

        return [
            path("review/", self.admin_view(views.review_queue), name="review_queue"),
            *super().get_urls(),
        ]

    def index(self, request, extra_context=None):
        from .selectors import DEFAULT_RANGE, home_figures

        figures = home_figures(product_id=request.GET.get("product") or None,
                               range_key=request.GET.get("range") or DEFAULT_RANGE)
        context = {**self.each_context(request), "title": self.index_title, "subtitle": None,
                   "app_list": self.get_app_list(request), "figures": figures,
                   "may_review": request.user.has_perm("deliveries.review_delivery"),
                   **(extra_context or {})}
        request.current_app = self.name
        return TemplateResponse(request, "dashboard/home.html", context)
