from django.urls import path

from . import apis

urlpatterns = [
    path("products", apis.ProductCreateApi.as_view(), name="product-create"),
    path("products/<uuid:product_id>", apis.ProductDetailApi.as_view(), name="product-detail"),
    path("products/<uuid:product_id>/rotate-key", apis.ProductRotateKeyApi.as_view(), name="product-rotate-key"),
    path("organizations", apis.OrganizationListCreateApi.as_view(), name="organization-list"),
    path("organizations/<uuid:organization_id>", apis.OrganizationDetailApi.as_view(), name="organization-detail"),
    path(
        "organizations/<uuid:organization_id>/rotate-key",
        apis.OrganizationRotateKeyApi.as_view(),
        name="organization-rotate-key",
    ),
    path("keys", apis.ApiKeyListApi.as_view(), name="key-list"),
    path("keys/<str:prefix>/revoke", apis.ApiKeyRevokeApi.as_view(), name="key-revoke"),
]
