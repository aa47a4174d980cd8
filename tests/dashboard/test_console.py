"""The operators' console: the dashboard's figures, the review queue, run pages and the staff groups."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.dashboard.groups import OPERATORS, READ_ONLY, REVIEWERS
from apps.dashboard.selectors import home_figures
from apps.deliveries.models import Delivery, DeliveryStatus
from apps.deliveries.services import deliveries_send
from apps.runs.engine import runs_execute
from apps.runs.models import Escalation, Run, RunStatus
from apps.runs.services import request_start, trigger_create
from tests import factories

pytestmark = pytest.mark.django_db


def staff(client, name: str, group: str | None = None, superuser: bool = False):
    User = get_user_model()
    user = (
        User.objects.create_superuser(name, f"{name}@example.com", "pw")
        if superuser
        else User.objects.create_user(name, f"{name}@example.com", "pw", is_staff=True)
    )
    if group:
        user.groups.add(Group.objects.get(name=group))
    client.force_login(user)
    return client


def _trigger(product, key="w", data=None, recipients=None):
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow=key,
        recipients=recipients or [{"id": "u1", "email": "ann@example.com"}],
        data=data or {},
        priority="normal",
    )
    run_ids = request_start(request_id=request_id)
    runs_execute(run_ids=run_ids)
    return Run.objects.filter(id__in=run_ids).order_by("id")


def _deliveries(product, statuses: dict, *, hours_ago=1, latency_ms=100):
    """Deliveries of `product` with the given counts per status, created `hours_ago`, each taking
    `latency_ms` to be accepted."""
    now = timezone.now()
    rows = [
        Delivery(
            product=product, channel="webhook", target="https://example.com", payload={}, max_attempts=5, status=status
        )
        for status, count in statuses.items()
        for _ in range(count)
    ]
    created = Delivery.objects.bulk_create(rows)
    at = now - timedelta(hours=hours_ago)
    Delivery.objects.filter(id__in=[d.id for d in created]).update(
        created_at=at, completed_at=at + timedelta(milliseconds=latency_ms)
    )


# --- Staff groups ---------------------------------------------------------------------------------


def test_the_migration_leaves_three_staff_groups_with_what_each_may_do():
    def codenames(name):
        return set(Group.objects.get(name=name).permissions.values_list("codename", flat=True))

    read_only, reviewers, operators = codenames(READ_ONLY), codenames(REVIEWERS), codenames(OPERATORS)
    assert {"view_delivery", "view_run", "view_connection", "view_auditevent", "view_workflow"} <= read_only
    assert not {c for c in read_only if not c.startswith("view_")}
    assert reviewers - read_only == {"review_delivery"}
    assert operators - read_only == {
        "review_delivery",
        "operate_run",
        "operate_connection",
        "publish_workflow",
        "operate_webhookendpoint",
    }


# --- Home ------------------------------------------------------------------------------------------


def test_home_figures_count_statuses_failure_rate_latency_held_and_undecided(product):
    other, _ = factories.make_product("Other")
    _deliveries(product, {"delivered": 6, "failed": 2}, latency_ms=100)
    _deliveries(product, {"sent": 2}, latency_ms=1100)
    _deliveries(product, {"delivered": 5}, hours_ago=30)  # outside the last 24 hours
    _deliveries(other, {"failed": 7})
    _deliveries(product, {"held": 3})

    figures = home_figures(product_id=product.id, range_key="24h")
    assert figures["totals"] == {"delivered": 6, "held": 3, "failed": 2, "sent": 2}
    assert (figures["failed"], figures["ended"], figures["failure_rate"]) == (2, 10, 0.2)
    assert figures["latency"]["p50"] == pytest.approx(100, abs=1)
    assert figures["latency"]["p99"] == pytest.approx(1100, abs=10)
    assert figures["held"] == 3
    assert sum(figures["chart"]["statuses"]["delivered"]) == 6
    assert len(figures["chart"]["times"]) == 24

    everyone = home_figures(range_key="7d")
    assert everyone["totals"]["failed"] == 9 and everyone["totals"]["delivered"] == 11


def test_the_home_page_shows_the_figures_and_links_into_filtered_lists(client, product):
    _deliveries(product, {"delivered": 3, "failed": 1})
    staff(client, "ro", READ_ONLY)
    page = client.get(reverse("admin:index"), {"product": str(product.id), "range": "24h"}).content.decode()
    assert 'data-figure="failure-rate">25.0%' in page
    failed = f"/admin/deliveries/delivery/?outcome=failure&amp;created=24h&amp;product__id__exact={product.id}"
    assert failed in page
    listing = client.get(failed.replace("&amp;", "&")).content.decode()
    assert listing.count('class="field-message_id"') == 1  # the one failed delivery, and only it
    assert "vendor/uplot/uPlot.iife.min.js" in page and 'id="rowbell-chart-data"' in page


def test_failed_runs_wait_for_a_decision_until_rerun_or_dismissed(client, product):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="{{ data.missing }}")])
    first, second = list(_trigger(product)) + list(_trigger(product))
    assert {first.status, second.status} == {RunStatus.FAILED}
    assert home_figures(product_id=product.id)["undecided"] == 2

    staff(client, "op", OPERATORS)
    client.post(reverse("admin:runs_run_changelist"), {"action": "rerun_from_start", "_selected_action": [first.id]})
    client.post(
        reverse("admin:runs_escalation_changelist"), {"action": "dismiss", "_selected_action": [second.escalation.id]}
    )
    assert home_figures(product_id=product.id)["undecided"] == 0
    decisions = dict(Escalation.objects.values_list("run_id", "decision"))
    assert decisions == {first.id: "rerun", second.id: "dismissed"}
    assert AuditEvent.objects.get(action="run.dismissed", target_id=str(second.id)).actor == "staff:op"


# --- Review queue ----------------------------------------------------------------------------------


@pytest.fixture
def held_email(product):
    factories.make_workflow(
        product,
        key="w",
        sandbox=True,
        steps=[
            factories.email_step(
                subject="Your order", body="Plain text", html="<h1>Order {{ data.order }}</h1><script>alert(1)</script>"
            )
        ],
    )
    run = _trigger(product, data={"order": 7}).get()
    return Delivery.objects.get(run=run)


def test_the_review_queue_shows_html_email_in_a_sandboxed_frame(client, held_email):
    assert held_email.status == DeliveryStatus.HELD
    staff(client, "rev", REVIEWERS)
    page = client.get(reverse("admin:review_queue")).content.decode()
    assert held_email.message_id in page and "Your order" in page
    # The HTML is only inside the frame's srcdoc (escaped), in a frame that may not run scripts.
    assert '<iframe sandbox=""' in page
    assert "&lt;h1&gt;Order 7&lt;/h1&gt;" in page and "<h1>Order 7</h1>" not in page
    assert "<script>alert(1)</script>" not in page
    assert 'id="review-release"' in page


def test_the_review_queue_and_the_delivery_page_show_a_webhook_s_key_with_every_digit(client, product):
    held = Delivery.objects.create(
        product=product,
        channel="webhook",
        target="https://example.com",
        status=DeliveryStatus.HELD,
        max_attempts=5,
        payload={"type": "row.created", "ids": [Decimal("1.23456789012345678901")]},
    )
    staff(client, "op", superuser=True)
    page = client.get(reverse("admin:review_queue")).content.decode()
    assert held.message_id in page and "1.23456789012345678901" in page
    page = client.get(reverse("admin:deliveries_delivery_change", args=[held.id])).content.decode()
    assert "1.23456789012345678901" in page


def test_a_reviewer_releases_and_the_delivery_is_sent_with_the_staff_user_named(
    client, held_email, hinted, django_capture_on_commit_callbacks, mailoutbox
):
    staff(client, "rev", REVIEWERS)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:review_queue"), {"do": "release", "message_id": [held_email.message_id]}, follow=True
        )
    assert "Released 1 delivery." in response.content.decode()
    assert AuditEvent.objects.get(action="delivery.released", target_id=held_email.message_id).actor == "staff:rev"
    assert hinted.run() == ["apps.deliveries.tasks.deliveries_send"]  # sent by a worker, not in the request
    assert Delivery.objects.get(id=held_email.id).status == DeliveryStatus.SENT
    assert mailoutbox[0].subject == "Your order"


def test_a_read_only_operator_sees_the_queue_but_may_not_release_or_discard(client, held_email):
    staff(client, "ro", READ_ONLY)
    page = client.get(reverse("admin:review_queue")).content.decode()
    assert held_email.message_id in page and 'id="review-release"' not in page and 'id="review-read-only"' in page
    refused = client.post(reverse("admin:review_queue"), {"do": "discard", "message_id": [held_email.message_id]})
    assert refused.status_code == 403
    # Nor through the delivery list's actions, which are not offered to the group.
    listing = client.get(reverse("admin:deliveries_delivery_changelist")).content.decode()
    assert 'value="release"' not in listing
    client.post(
        reverse("admin:deliveries_delivery_changelist"), {"action": "release", "_selected_action": [held_email.id]}
    )
    assert Delivery.objects.get(id=held_email.id).status == DeliveryStatus.HELD
    assert not AuditEvent.objects.filter(action__in=("delivery.released", "delivery.discarded")).exists()


def _sidebar(page: str) -> str:
    return page[page.index('id="nav-sidebar"') : page.index("</nav>", page.index('id="nav-sidebar"'))]


def test_the_sidebar_leads_to_the_review_queue_with_how_many_are_held(client, product):
    factories.make_workflow(product, key="w", sandbox=True, steps=[factories.email_step(subject="s", body="b")])
    _trigger(product, recipients=[{"id": f"u{i}", "email": f"u{i}@example.com"} for i in range(3)])
    staff(client, "ro", READ_ONLY)
    queue = reverse("admin:review_queue")
    for url in (reverse("admin:index"), reverse("admin:runs_run_changelist"), queue):
        sidebar = _sidebar(client.get(url).content.decode())
        assert f'<a href="{queue}"' in sidebar, url
        assert 'id="sidebar-held" title="3 held for review">3</span>' in sidebar
    assert 'aria-current="page">Review queue' in _sidebar(client.get(queue).content.decode())

    staff(client, "nobody")  # staff outside the groups may not see deliveries: no queue for them
    assert queue not in client.get(reverse("admin:index")).content.decode()


def test_discarding_many_at_once_reports_what_was_already_reviewed(client, product):
    factories.make_workflow(product, key="w", sandbox=True, steps=[factories.email_step(subject="s", body="b")])
    runs = _trigger(product, recipients=[{"id": f"u{i}", "email": f"u{i}@example.com"} for i in range(3)])
    ids = list(Delivery.objects.filter(run__in=runs).order_by("id").values_list("message_id", flat=True))
    staff(client, "op", OPERATORS)
    client.post(reverse("admin:review_queue"), {"do": "release", "message_id": ids[:1]})
    page = client.post(reverse("admin:review_queue"), {"do": "discard", "message_id": ids}, follow=True)
    assert "Discarded 2 deliveries; 1 no longer held (reviewed meanwhile), left alone." in page.content.decode()


# --- Runs ------------------------------------------------------------------------------------------


def test_a_runs_page_shows_its_timeline_with_attempts_and_errors(client, product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", retry={"max_attempts": 1}, steps=[factories.webhook_step(endpoint)])
    receiver.answer((500, {}, b"upstream broke"))
    run = _trigger(product).get()
    runs_execute(run_ids=[run.id])
    deliveries_send(delivery_ids=list(Delivery.objects.filter(run=run).values_list("id", flat=True)))
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED

    staff(client, "ro", READ_ONLY)
    page = client.get(reverse("admin:runs_run_change", args=[run.id])).content.decode()
    timeline = page[page.index('id="run-timeline"') :]
    for expected in (
        "Trigger request",
        "Step hook (notify) failed",
        "Attempt 1 of msg_",
        "failure, HTTP 500",
        "Run failed",
    ):
        assert expected in timeline, expected
    assert 'data-action="rerun_from_failed_step"' not in page  # read-only: no action buttons


def _buttons(client, url) -> set[str]:
    import re

    return set(
        re.findall(r'<button type="submit" class="button" data-action="([a-z_]+)"', client.get(url).content.decode())
    )


def _offered(client, url, **filters) -> set[str]:
    import re

    page = client.get(url, filters).content.decode()
    return set(re.findall(r'<option value="([a-z_]+)"', page[page.find('name="action"') : page.find("</select>")]))


RERUNS = {"rerun_from_failed_step", "rerun_from_start"}


def test_a_page_offers_only_the_actions_that_apply_to_its_object_as_it_is(client, product, receiver):
    from apps.deliveries.models import WebhookEndpoint
    from apps.deliveries.services import webhook_endpoint_disable
    from apps.runs.engine import run_dismiss

    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="{{ data.missing }}")])
    factories.make_workflow(product, key="slow", steps=[{"type": "wait", "duration": "1d"}])
    factories.make_workflow(product, key="ok", sandbox=True, steps=[factories.email_step(subject="s", body="b")])
    failed, dismissed = list(_trigger(product)) + list(_trigger(product))
    waiting = _trigger(product, key="slow").get()
    held = _trigger(product, key="ok").get()
    run_dismiss(run=dismissed, actor="test")
    completed = Run.objects.create(
        source="api",
        cause_id="done",
        product=product,
        workflow_version=failed.workflow_version,
        recipient={"id": "u"},
        status=RunStatus.COMPLETED,
        completed_at=timezone.now(),
    )
    staff(client, "op", OPERATORS)

    def run_page(run):
        return _buttons(client, reverse("admin:runs_run_change", args=[run.id]))

    assert run_page(completed) == set()  # nothing to re-run, cancel or dismiss
    assert run_page(waiting) == {"cancel"}
    assert run_page(failed) == RERUNS | {"dismiss"}
    assert run_page(dismissed) == RERUNS  # decided: re-run still possible, nothing left to dismiss
    assert _buttons(client, reverse("admin:runs_escalation_change", args=[dismissed.escalation.id])) == RERUNS
    client.post(reverse("admin:runs_run_changelist"), {"action": "rerun_from_start", "_selected_action": [failed.id]})
    rerun = Run.objects.get(rerun_of=failed)
    assert rerun.status == RunStatus.QUEUED  # not ended: a second re-run would be refused, and is not offered
    page = client.get(reverse("admin:runs_run_change", args=[failed.id])).content.decode()
    assert "data-action=" not in page and f"Run {rerun.id}, a re-run of this one, has not ended yet." in page
    assert run_page(rerun) == {"cancel"}

    delivery = Delivery.objects.get(run=held)
    assert _buttons(client, reverse("admin:deliveries_delivery_change", args=[delivery.id])) == {"release", "discard"}
    Delivery.objects.filter(id=delivery.id).update(status=DeliveryStatus.DELIVERED)
    assert _buttons(client, reverse("admin:deliveries_delivery_change", args=[delivery.id])) == set()

    endpoint = WebhookEndpoint.objects.get(id=factories.make_endpoint(product, receiver.url()).id)
    page = reverse("admin:deliveries_webhookendpoint_change", args=[endpoint.id])
    assert _buttons(client, page) == {"disable", "replay_failed", "rotate_secret"}
    webhook_endpoint_disable(endpoint=endpoint, actor="test")
    assert _buttons(client, page) == {"enable", "enable_and_replay", "rotate_secret"}

    workflow = factories.make_workflow(product, key="draft", publish=False, steps=[factories.email_step()])
    assert _buttons(client, reverse("admin:workflows_workflow_change", args=[workflow.id])) == {"publish"}


def test_a_list_filtered_to_one_state_offers_only_the_actions_that_apply_to_it(client, product):
    staff(client, "op", OPERATORS)
    runs = reverse("admin:runs_run_changelist")
    everything = RERUNS | {f"{r}_on_latest" for r in RERUNS} | {"cancel", "dismiss"}
    assert _offered(client, runs) == everything
    assert _offered(client, runs, status__exact="completed") == set()
    assert _offered(client, runs, status__exact="running") == set()
    assert _offered(client, runs, status__exact="waiting") == {"cancel"}
    assert _offered(client, runs, status__exact="failed") == everything - {"cancel"}
    assert _offered(client, runs, status__exact="cancelled") == everything - {"cancel", "dismiss"}
    escalations = reverse("admin:runs_escalation_changelist")
    assert "dismiss" in _offered(client, escalations, decided="no")
    assert "dismiss" not in _offered(client, escalations, decided="yes")
    deliveries = reverse("admin:deliveries_delivery_changelist")
    assert _offered(client, deliveries, status__exact="held") == {"release", "discard"}
    assert _offered(client, deliveries, status__exact="delivered") == set()
    endpoints = reverse("admin:deliveries_webhookendpoint_changelist")
    assert {"enable", "enable_and_replay"} & _offered(client, endpoints, enabled__exact="1") == set()
    assert {"disable", "replay_failed"} & _offered(client, endpoints, enabled__exact="0") == set()


def _timeline(page: str) -> list[str]:
    """The run page's timeline entries, in the order shown."""
    import re

    listed = page[page.index('id="run-timeline"') : page.index("</ol>", page.index('id="run-timeline"'))]
    return [" ".join(re.sub(r"<[^>]+>", " ", li).split()) for li in listed.split("<li")[1:]]


def _at(entries: list[str], text: str) -> int:
    return next(i for i, entry in enumerate(entries) if text in entry)


def test_a_failed_step_shows_after_the_attempts_that_failed_it_and_the_run_ends_last(client, product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", retry={"max_attempts": 2}, steps=[factories.webhook_step(endpoint)])
    receiver.answer((503, {}, b"maintenance"), (502, {}, b"bad gateway"))
    run = _trigger(product).get()
    for _ in range(2):  # the first attempt, then its retry once due
        Delivery.objects.filter(run=run).update(next_attempt_at=timezone.now())
        deliveries_send(delivery_ids=list(Delivery.objects.filter(run=run).values_list("id", flat=True)))
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and len(receiver.requests) == 2
    # A step that fails at once (a template naming missing data): its row is written after the run's end time.
    factories.make_workflow(product, key="broken", steps=[factories.email_step(subject="{{ data.missing }}")])
    broken = _trigger(product, key="broken").get()
    assert broken.status == RunStatus.FAILED

    staff(client, "ro", READ_ONLY)
    entries = _timeline(client.get(reverse("admin:runs_run_change", args=[run.id])).content.decode())
    failed_step = _at(entries, "Step hook (notify) failed")
    assert _at(entries, "Attempt 1 of msg_") < _at(entries, "Attempt 2 of msg_") < failed_step, entries
    assert _at(entries, ": failed") < failed_step  # the delivery's failure, then the step it failed
    assert failed_step < _at(entries, "Run failed") and "HTTP 502" in entries[failed_step]
    entries = _timeline(client.get(reverse("admin:runs_run_change", args=[broken.id])).content.decode())
    assert _at(entries, "Step mail (notify) failed") < _at(entries, "Run failed"), entries


def test_an_operator_reruns_from_the_runs_page_and_returns_to_it(client, product):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="{{ data.missing }}")])
    run = _trigger(product).get()
    staff(client, "op", OPERATORS)
    url = reverse("admin:runs_run_change", args=[run.id])
    page = client.get(url).content.decode()
    assert 'data-action="rerun_from_failed_step"' in page
    response = client.post(
        reverse("admin:runs_run_changelist"),
        {"action": "rerun_from_failed_step", "_selected_action": [run.id], "index": 0, "_next": url},
    )
    assert response.status_code == 302 and response["Location"] == url
    assert Run.objects.filter(rerun_of=run).count() == 1
    # An outside `_next` is ignored.
    elsewhere = client.post(
        reverse("admin:runs_run_changelist"),
        {"action": "dismiss", "_selected_action": [run.id], "index": 0, "_next": "https://evil.example/"},
    )
    assert elsewhere["Location"] != "https://evil.example/"


def test_lists_count_at_most_ten_thousand_and_one_rows(client, product):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    staff(client, "ro", READ_ONLY)
    with CaptureQueriesContext(connection) as captured:
        assert client.get(reverse("admin:deliveries_delivery_changelist")).status_code == 200
    counts = [
        q["sql"]
        for q in captured.captured_queries
        if "COUNT(" in q["sql"].upper() and "deliveries_delivery" in q["sql"]
    ]
    assert counts and all("LIMIT 10001" in sql for sql in counts), counts


# --- Large tables and odd input --------------------------------------------------------------------


def test_a_list_past_ten_thousand_rows_says_so_and_pages_on(client, product):
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(product=product, actor="test", action="thing.done", target_type="run", target_id=str(i))
            for i in range(10_250)
        ]
    )
    staff(client, "ro", READ_ONLY)
    url = reverse("admin:audit_auditevent_changelist")
    first = client.get(url).content.decode()
    assert "more than 10,000 audit events" in first and "Show counts" not in first
    deep = client.get(url, {"p": 102})  # past the counted pages
    assert deep.status_code == 200 and deep.content.decode().count('class="field-target_id"') == 100


def test_searches_are_exact_and_odd_input_answers_200(client, product):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="{{ data.missing }}")])
    run = _trigger(product).get()
    _deliveries(product, {"delivered": 2})
    delivery = Delivery.objects.first()
    staff(client, "ro", READ_ONLY)
    runs = reverse("admin:runs_run_changelist")
    deliveries = reverse("admin:deliveries_delivery_changelist")
    audit = reverse("admin:audit_auditevent_changelist")

    def rows(url, **params):
        response = client.get(url, params)
        assert response.status_code == 200, (url, params)
        return response.content.decode().count('<th class="field-')  # each row's first cell

    assert rows(deliveries, q=delivery.message_id) == 1
    assert rows(deliveries, q=delivery.message_id.upper()) == 0  # exact: an id, not a pattern
    assert rows(runs, q=str(run.id)) == 1 and rows(runs, q=str(run.request_id)) == 1
    assert rows(runs, q="not-a-number") == 0
    assert rows(audit, q=str(run.id)) >= 1
    for url, params in (
        (runs, {"workflow": "²"}),
        (runs, {"workflow": "x"}),
        (runs, {"organization": "nope"}),
        (runs, {"created": "forever"}),
        (deliveries, {"outcome": "maybe"}),
        (deliveries, {"channel": "fax"}),
    ):
        assert client.get(url, params).status_code == 200, params


def test_releasing_more_than_a_batch_at_once_is_refused_whole(client, product):
    _deliveries(product, {"held": 1001})
    staff(client, "rev", REVIEWERS)
    page = client.post(
        reverse("admin:deliveries_delivery_changelist"),
        {"action": "release", "select_across": 1, "index": 0, "_selected_action": [Delivery.objects.first().id]},
        follow=True,
    ).content.decode()
    assert "At most 1000 deliveries at a time" in page
    assert Delivery.objects.filter(status="held").count() == 1001


def test_staff_outside_the_groups_see_no_figures(client, product):
    _deliveries(product, {"failed": 1})
    staff(client, "nobody")
    page = client.get(reverse("admin:index")).content.decode()
    assert 'id="dashboard-not-allowed"' in page and "data-figure" not in page


def test_the_email_preview_fetches_nothing_from_outside(client, product):
    factories.make_workflow(
        product,
        key="w",
        sandbox=True,
        steps=[factories.email_step(subject="s", body="b", html='<img src="https://tracker.example/pixel.gif">')],
    )
    _trigger(product)
    staff(client, "rev", REVIEWERS)
    page = client.get(reverse("admin:review_queue")).content.decode()
    frame = page[page.index("<iframe") : page.index("</iframe>")]
    assert "Content-Security-Policy" in frame and "default-src &#x27;none&#x27;; img-src data:" in frame


def test_the_groups_migration_creates_them_and_a_later_migrate_keeps_what_an_administrator_added():
    import importlib

    from django.contrib.auth.models import Permission
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    migration = importlib.import_module("apps.dashboard.migrations.0001_staff_groups")
    Group.objects.filter(name__in=[READ_ONLY, REVIEWERS, OPERATORS]).delete()
    state = MigrationExecutor(connection).loader.project_state(("dashboard", "0001_staff_groups"))
    migration.create_groups(state.apps, None)  # the migration's own code, on its own model states
    assert set(Group.objects.values_list("name", flat=True)) >= {READ_ONLY, REVIEWERS, OPERATORS}
    assert Group.objects.get(name=REVIEWERS).permissions.filter(codename="review_delivery").exists()

    revoke = Permission.objects.get(codename="change_apikey", content_type__app_label="tenants")
    Group.objects.get(name=OPERATORS).permissions.add(revoke)
    call_command("migrate", verbosity=0)
    assert Group.objects.get(name=OPERATORS).permissions.filter(id=revoke.id).exists()


def test_escalations_of_runs_already_rerun_start_decided():
    import importlib

    from django.apps import apps

    from apps.tenants.models import Product

    product = Product.objects.create(name="P")
    workflow = factories.make_workflow(product, key="w", steps=[factories.email_step(subject="{{ data.missing }}")])
    first, second = list(_trigger(product)) + list(_trigger(product))
    rerun = Run.objects.create(
        source=first.source,
        cause_id=first.cause_id,
        request_id=first.request_id,
        product=product,
        workflow_version=workflow.published_version,
        recipient={},
        rerun_of=first,
        status=RunStatus.COMPLETED,
    )
    Escalation.objects.update(decision="", decided_at=None, decided_by="")  # as before the migration
    importlib.import_module("apps.runs.migrations.0007_escalations_decided_by_rerun").decided_by_rerun(apps, None)
    assert dict(Escalation.objects.values_list("run_id", "decision")) == {first.id: "rerun", second.id: ""}
    assert Escalation.objects.get(run=first).decided_at == rerun.created_at
