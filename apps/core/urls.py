from django.urls import path
from django.views.generic import RedirectView

from . import views

urlpatterns = [
    path("healthz", views.health, name="health"),
    path("ping", views.ping, name="ping"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
