"""Trigger drift on the dashboard: a connection whose installed triggers no longer do what the published
workflows need (here, a customer's DBA disabled them) is named on the home page, with a link to it."""

import pytest
from django.urls import reverse

from apps.connections.services import connections_health_refresh
from apps.dashboard.groups import READ_ONLY
from tests import factories
from tests.connections.conftest import CUSTOMER_DB, admin_connect

from .test_console import staff

pytestmark = pytest.mark.django_db(transaction=True)


def _drift_section(client) -> str | None:
    home = client.get(reverse("admin:index")).content.decode()
    if 'id="trigger-drift"' not in home:
        return None
    start = home.index('id="trigger-drift"')
    return home[start : home.index("</section>", start)]


def test_the_dashboard_names_connections_whose_triggers_drifted_from_what_is_published(client, product, connection):
    factories.make_workflow(
        product,
        key="order-created",
        trigger={
            "type": "database",
            "connection": str(connection.id),
            "table": "public.orders",
            "events": ["row.created"],
        },
        steps=[{"type": "wait", "duration": "1s"}],
    )
    connection.refresh_from_db()
    connections_health_refresh()
    staff(client, "ro", READ_ONLY)
    assert _drift_section(client) is None  # in order: nothing to say

    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("ALTER TABLE public.orders DISABLE TRIGGER USER")
    connections_health_refresh()  # the beat tick notices (it does not enable them behind the DBA's back)

    section = _drift_section(client)
    assert section is not None
    assert "1 connection no longer captures what is published" in section
    assert f'href="{reverse("admin:connections_connection_change", args=[connection.id])}"' in section
    assert "shop" in section and "disabled" in section and "Affects workflow order-created" in section
    listed = client.get(reverse("admin:connections_connection_changelist"), {"drift": "yes"}).content.decode()
    assert listed.count('class="field-name"') == 1
    assert (
        'class="field-name"'
        not in client.get(reverse("admin:connections_connection_changelist"), {"drift": "no"}).content.decode()
    )
