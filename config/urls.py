from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from apps.core.views import api_not_found
from apps.dashboard.metrics import metrics_view

api_v1 = [
    path("", include("apps.tenants.urls")),
    path("", include("apps.builder.urls")),  # before workflows/<key>
    path("", include("apps.workflows.urls")),
    path("", include("apps.runs.urls")),
    path("", include("apps.subscriptions.urls")),
    path("", include("apps.deliveries.urls")),
    path("", include("apps.connections.urls")),
    path("", include("apps.audit.urls")),
    re_path(r"^(?P<rest>.*)$", api_not_found),  # last: JSON, not Django's debug page, for a path that is none
]

# ReDoc's page runs no inline script either (templates/drf_spectacular/redoc.html), but ReDoc adds its styles
# to the page as <style> elements and runs its search in a worker started from a blob: URL. This page alone
# allows both; every other page keeps the site's policy (config/settings/base.py).
redoc = csp_update({"style-src": ["'unsafe-inline'"], "worker-src": ["blob:"]})(
    SpectacularRedocView.as_view(url_name="schema")
)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file of its own: no inline script.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", redoc, name="api-redoc"),
    path("metrics", metrics_view, name="prometheus-metrics"),
    path("", include("apps.deliveries.tracking_urls")),
    path("", include("apps.core.urls")),
]

handler404 = "apps.core.views.not_found"
handler500 = "apps.core.views.server_error"
