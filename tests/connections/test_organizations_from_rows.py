"""Organizations from rows: a B2B product's trigger names the column holding the external id of the
organization that owns the row; the run then belongs to that organization (its providers, its sandbox, its
key, its audit scope). A row that names no organization fails its run, escalated: never dropped silently."""

import pytest

from apps.deliveries.models import Delivery
from apps.runs.models import Escalation, Run, RunStatus
from apps.runs.services import runs_execute
from apps.tenants.services import organization_create
from tests.conftest import client_for

from .conftest import poll, writer_connect
from .test_recipients_from_rows import EMAIL, RECIPIENT, RELATED, _create

pytestmark = pytest.mark.django_db(transaction=True)


def _orders_for_organizations():
    """Orders of Acme (its id padded with blanks, as a char(n) column reads it), Globex, an unknown one, none."""
    with writer_connect() as app:
        app.execute(
            "INSERT INTO public.customers (email, name) VALUES ('ann@example.com', 'Ann'), ('bob@example.com', 'Bob'),"
            " ('cy@example.com', 'Cy')"
        )
        app.execute(
            "INSERT INTO public.orders (customer_id, total, org_id) VALUES (1, 10, 'acme   '), (2, 20, 'globex'),"
            " (3, 30, 'initech'), (1, 40, NULL)"
        )


def _acme_smtp(client, organization):
    """The organization's own SMTP provider, sending as orders@acme.example (nothing listens: previews only)."""
    configured = client.put(
        "/api/v1/providers/email",
        {
            "organization": str(organization.id),
            "provider": "smtp",
            "credentials": {},
            "options": {"host": "127.0.0.1", "port": 2525, "security": "none", "from_email": "orders@acme.example"},
        },
        format="json",
    )
    assert configured.status_code == 200, configured.json()
    return configured


def test_each_run_belongs_to_the_organization_that_owns_its_row(product, product_client, connection):
    acme, acme_key = organization_create(product=product, name="Acme", external_id="acme", actor="test")
    globex, globex_key = organization_create(product=product, name="Globex", external_id="globex", actor="test")
    response = _create(product_client, connection, related=RELATED, recipient=RECIPIENT, organization="row.org_id")
    assert response.status_code == 201, response.json()
    assert response.json()["trigger"]["organization"] == "row.org_id"
    assert product_client.post("/api/v1/workflows/order-paid/publish").status_code == 201
    _orders_for_organizations()
    poll(connection_id=connection.id)
    with writer_connect() as app:
        app.execute("UPDATE public.orders SET paid = true")
    poll(connection_id=connection.id)
    runs_execute(run_ids=list(Run.objects.filter(status=RunStatus.QUEUED).values_list("id", flat=True)))

    by_target = {d.target: d.organization_id for d in Delivery.objects.all()}
    assert by_target == {"ann@example.com": acme.id, "bob@example.com": globex.id}
    # Each organization's key sees its own run and delivery only.
    acme_runs = client_for(acme_key).get("/api/v1/runs").json()["results"]
    assert [(r["recipient"]["email"], r["organization"]) for r in acme_runs] == [("ann@example.com", str(acme.id))]
    globex_runs = client_for(globex_key).get("/api/v1/runs").json()["results"]
    assert [r["recipient"]["email"] for r in globex_runs] == ["bob@example.com"]
    # ... and its run in its audit trail, routed there by its row.
    acme_audit = client_for(acme_key).get("/api/v1/audit").json()["results"]
    routed = [(a["target_id"], a["data"]) for a in acme_audit if a["action"] == "run.routed"]
    assert routed == [(str(acme_runs[0]["id"]), {"organization": "acme"})]

    # 'initech' matches no organization, and order 4 names none: both runs fail, escalated, nothing sent.
    failed = Run.objects.filter(status=RunStatus.FAILED).order_by("recipient_index")
    assert len(failed) == 2
    assert "external id 'initech' (row.org_id)" in failed[0].error
    assert "names no organization" in failed[1].error
    assert Escalation.objects.filter(run__in=failed).count() == 2
    assert not Delivery.objects.filter(target="cy@example.com").exists()


def test_an_organization_column_needs_a_run_per_row_and_a_real_column(product_client, connection):
    response = _create(
        product_client,
        connection,
        steps=[{**EMAIL, "subject": "s", "body": "b", "to": "ops@example.com"}],
        organization="row.tenant",
    )
    assert response.status_code == 400
    fields = {f["field"]: f["reason"] for f in response.json()["error"]["fields"]}
    assert "No column 'tenant' in public.orders" in fields["trigger.organization"]


def test_a_sandboxed_organization_s_routed_runs_hold_their_messages_for_review(product, product_client, connection):
    organization, _ = organization_create(product=product, name="Acme", external_id="acme", actor="test")
    organization_create(product=product, name="Globex", external_id="globex", actor="test")
    patched = product_client.patch(f"/api/v1/organizations/{organization.id}", {"sandbox": True}, format="json")
    assert patched.status_code == 200 and patched.json()["sandbox"] is True
    _acme_smtp(product_client, organization)
    response = _create(product_client, connection, related=RELATED, recipient=RECIPIENT, organization="row.org_id")
    assert response.status_code == 201, response.json()
    assert product_client.post("/api/v1/workflows/order-paid/publish").status_code == 201
    _orders_for_organizations()
    poll(connection_id=connection.id)
    with writer_connect() as app:
        app.execute("UPDATE public.orders SET paid = true WHERE id IN (1, 2)")
    poll(connection_id=connection.id)
    runs_execute(run_ids=list(Run.objects.filter(status=RunStatus.QUEUED).values_list("id", flat=True)))

    statuses = dict(Delivery.objects.values_list("target", "status"))
    assert statuses == {"ann@example.com": "held", "bob@example.com": "sent"}  # Acme is sandboxed, Globex not
    # The review queue shows the From Acme's provider will send as, not the service's default.
    held = Delivery.objects.get(target="ann@example.com")
    assert held.payload["from"] == "orders@acme.example"
    assert Delivery.objects.get(target="bob@example.com").payload["from"] != "orders@acme.example"


def test_a_run_failed_for_its_organization_reads_the_corrected_row_when_re_run(product, product_client, connection):
    from apps.runs.models import RunStatus as Status

    organization_create(product=product, name="Acme", external_id="acme", actor="test")
    response = _create(product_client, connection, related=RELATED, recipient=RECIPIENT, organization="row.org_id")
    assert response.status_code == 201, response.json()
    assert product_client.post("/api/v1/workflows/order-paid/publish").status_code == 201
    _orders_for_organizations()
    poll(connection_id=connection.id)
    with writer_connect() as app:
        app.execute("UPDATE public.orders SET paid = true WHERE id = 3")  # org 'initech': no such organization
    poll(connection_id=connection.id)
    runs_execute(run_ids=list(Run.objects.filter(status=Status.QUEUED).values_list("id", flat=True)))
    failed = Run.objects.get(status=Status.FAILED)
    with writer_connect() as app:
        app.execute("UPDATE public.orders SET org_id = 'acme' WHERE id = 3")  # the row corrected

    for start_from in ("failed_step", "start"):
        answer = product_client.post(f"/api/v1/runs/{failed.id}/rerun", {"start_from": start_from}, format="json")
        assert answer.status_code == 201, answer.json()
        rerun = Run.objects.get(id=answer.json()["id"])
        runs_execute(run_ids=[rerun.id])
        rerun.refresh_from_db()
        assert rerun.status == Status.COMPLETED and rerun.organization_id is not None, rerun.error
        failed = rerun
        Run.objects.filter(id=rerun.id).update(status=Status.FAILED)  # so that it may be re-run again


def test_a_preview_on_a_row_says_which_organization_it_routes_to_who_sends_and_whether_it_is_held(
    product, product_client, connection
):
    acme, _ = organization_create(product=product, name="Acme", external_id="acme", actor="test")
    organization_create(product=product, name="Globex", external_id="globex", actor="test")
    product_client.patch(f"/api/v1/organizations/{acme.id}", {"sandbox": True}, format="json")
    configured = _acme_smtp(product_client, acme)
    assert configured.json()["credentials_set"] == []  # no authentication: nothing stored to speak of
    response = _create(product_client, connection, related=RELATED, recipient=RECIPIENT, organization="row.org_id")
    assert response.status_code == 201, response.json()
    _orders_for_organizations()

    def preview(row_key):
        answer = product_client.post("/api/v1/workflows/order-paid/preview", {"row_key": row_key}, format="json")
        assert answer.status_code == 200, answer.json()
        return answer.json()

    acme_row = preview(1)
    assert acme_row["organization"] == {"id": str(acme.id), "external_id": "acme", "name": "Acme", "sandbox": True}
    assert acme_row["held"] is True and "error" not in acme_row
    assert acme_row["steps"][0]["provider"] == {"name": "smtp", "of": "organization"}
    assert acme_row["steps"][0]["payload"]["from"] == "orders@acme.example"  # the From its provider sends as
    globex_row = preview(2)
    assert (globex_row["organization"]["name"], globex_row["held"]) == ("Globex", False)
    assert globex_row["steps"][0]["provider"] is None  # neither Globex nor the product configured email
    for row_key, reason in ((3, "external id 'initech' (row.org_id)"), (4, "names no organization")):
        unrouted = preview(row_key)
        assert reason in unrouted["organization"]["error"] and "escalated" in unrouted["error"], unrouted

    # A dry-run backfill's examples say the same of each row.
    assert product_client.post("/api/v1/workflows/order-paid/publish").status_code == 201
    dry = product_client.post("/api/v1/workflows/order-paid/backfill", {"dry_run": True}, format="json").json()
    assert [(e["row_key"], e["held"], e.get("organization", {}).get("name")) for e in dry["examples"]] == [
        (1, True, "Acme"),
        (2, False, "Globex"),
        (3, False, None),
    ]
    assert "initech" in dry["examples"][2]["error"]
