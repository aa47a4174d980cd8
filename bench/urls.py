from django.urls import include, path

from . import views

urlpatterns = [
    path("bench/insert", views.insert_one_row),
    path("", include("config.urls")),
]
