from django.db.models import QuerySet

from apps.core.exceptions import NotFound
from apps.tenants.principals import Tenant

from .models import Connection


def connection_list(*, tenant: Tenant) -> QuerySet:
    return Connection.objects.filter(product_id=tenant.product_id)


def connection_get(*, tenant: Tenant, connection_id) -> Connection:
    connection = connection_list(tenant=tenant).filter(id=connection_id).first()
    if connection is None:
        raise NotFound("Connection not found.")
    return connection
