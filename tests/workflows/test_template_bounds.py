"""Every render is bounded in time and size: saving and previewing answer 400 naming the field and the
bound, a run fails the step with the reason (escalated), and one tenant's heavy template does not keep
another tenant's delivery from going out.

Without the bounds some of these templates run for minutes or take gigabytes: `hang_guard` and
`memory_guard` make such a test fail quickly instead of hanging or exhausting the machine."""

import resource
import signal

import pytest
from django.core import mail

from apps.core.templating import TemplateLimitError, TemplateRenderError, render, template_check
from apps.deliveries.models import Delivery
from apps.deliveries.services import deliveries_send
from apps.runs.models import Escalation, Run, RunStatus, RunStep, StepStatus
from apps.runs.services import request_start
from tests import factories
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

NESTED_LOOPS = "{% for a in range(data.n) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
LONG_STRING = "{{ ('a' * data.n)|length }}"
HUGE_POWER = "{{ (9**(9**8)) > 1 }}"
RECURSIVE_MACRO = "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}"
# Prints data.s data.n times inside a block that collects its text before joining it.
REPEATED = "{% for i in range(data.n) %}{{ data.s }}{% endfor %}"
SET_BLOCK = "{% set x %}" + REPEATED + "{% endset %}{{ x|length }}"
BLOCK_TOO_BIG = "would collect more than 1,000,000 characters"


class Hung(BaseException):
    """Not an Exception: no `except Exception` on the way may turn it into an ordinary failure."""


@pytest.fixture
def hang_guard():
    """Fail a test that runs longer than 60 s (a render that nothing stops)."""

    def hung(signum, frame):
        raise Hung("the render was not stopped")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 60)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def memory_guard():
    """Let the test process grow by at most 512 MB: past it, allocation fails instead of the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size + 512 * 1024 * 1024, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _fields(response) -> dict:
    return {f["field"]: f["reason"] for f in response.json()["error"].get("fields", [])}


def _save(client, body: str, key: str = "w"):
    return client.post("/api/v1/workflows", {"key": key, "steps": [factories.email_step(body=body)]}, format="json")


def _run(client, key: str, data: dict):
    """Trigger `key` for one recipient, start the request as a worker would; return its run."""
    response = client.post(
        "/api/v1/trigger",
        {"workflow": key, "to": [{"id": "u1", "email": "u1@example.com", "name": "U"}], "data": data},
        format="json",
    )
    assert response.status_code == 202, response.content
    request_id = response.json()["request_id"]
    request_start(request_id=request_id)
    return Run.objects.get(request_id=request_id)


def _assert_step_failed(run, *reason_parts: str) -> None:
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    step = RunStep.objects.get(run=run, step_id="mail")
    assert step.status == StepStatus.FAILED
    for part in reason_parts:
        assert part in run.error and part in step.error
    assert not Delivery.objects.filter(run=run).exists()
    assert Escalation.objects.filter(run=run).exists()  # escalated like any failed run


# --- Saving -----------------------------------------------------------------------------------------------


def test_saving_a_power_too_big_to_compute_is_a_400_naming_the_field(product_client):
    response = _save(product_client, HUGE_POWER)
    assert response.status_code == 400
    reason = _fields(response)["steps[0].body"]
    assert "136,454,877 bits" in reason and "limit is 100,000 bits" in reason and "smaller numbers" in reason


@pytest.mark.parametrize(
    "body, says",
    [
        ("{{ 'a'|center(1000000000) }}", "1,000,000,000 characters"),
        ("{{ '%*s' % (1000000000, 'x') }}", "formatted text"),
        ("{% for i in range(10000000) %}{{ i }}{% endfor %}", "range() of 10,000,000 items"),
        ("{{ 'ab' * 10 ** 8 }}", "200,000,000 characters"),
    ],
)
def test_saving_a_template_whose_constants_trip_a_bound_is_a_400(product_client, body, says):
    response = _save(product_client, body)
    assert response.status_code == 400
    assert says in _fields(response)["steps[0].body"]


def test_updating_and_publishing_check_the_bounds_too(product, product_client):
    factories.make_workflow(product, key="w", steps=[factories.email_step()], publish=False)
    response = product_client.put(
        "/api/v1/workflows/w", {"steps": [factories.email_step(subject=HUGE_POWER)]}, format="json"
    )
    assert response.status_code == 400 and "bits" in _fields(response)["steps[0].subject"]


# --- Previewing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, data, says",
    [
        (NESTED_LOOPS, {"n": 1000}, "ran longer than"),
        (LONG_STRING, {"n": 10**9}, "1,000,000,000 characters"),
        ("{{ (9 ** data.n) > 1 }}", {"n": 9**8}, "bits"),
        (RECURSIVE_MACRO, {}, "Calls nest more than 64 deep"),
        (
            "{% set big = 'a' * 1000000 %}{% set x %}{% for i in range(data.n) %}{{ big }}{% endfor %}{% endset %}"
            "{{ x|length }}",
            {"n": 20000},
            BLOCK_TOO_BIG,
        ),
    ],
)
def test_a_preview_that_trips_a_bound_is_a_400_naming_the_field(
    product, product_client, hang_guard, memory_guard, settings, body, data, says
):
    settings.ROWBELL_TEMPLATE_RENDER_SECONDS = 0.3
    factories.make_workflow(product, key="w", steps=[factories.email_step(body=body)], publish=False)
    response = product_client.post(
        "/api/v1/workflows/w/preview",
        {"data": data, "recipient": {"email": "a@example.com", "name": "A"}},
        format="json",
    )
    assert response.status_code == 400
    assert says in _fields(response)["steps[0].body"]


def test_a_preview_still_reports_an_ordinary_template_error_on_its_step(product, product_client):
    factories.make_workflow(product, key="w", steps=[factories.email_step(body="{{ data.missing }}")], publish=False)
    response = product_client.post(
        "/api/v1/workflows/w/preview", {"recipient": {"email": "a@example.com", "name": "A"}}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["steps"][0]["error"] == "Missing variable 'missing'."


# --- Running -------------------------------------------------------------------------------------------


def test_a_string_too_long_fails_the_step_with_the_reason(product, product_client, memory_guard):
    factories.make_workflow(product, key="w", steps=[factories.email_step(body=LONG_STRING)])
    run = _run(product_client, "w", {"n": 10**9})
    _assert_step_failed(run, "1,000,000,000 characters", "the limit is 1,000,000")


def test_a_power_too_big_from_the_data_fails_the_step(product, product_client, hang_guard):
    factories.make_workflow(product, key="w", steps=[factories.email_step(body="{{ (9 ** data.n) > 1 }}")])
    run = _run(product_client, "w", {"n": 9**8})
    _assert_step_failed(run, "bits", "Use smaller numbers")


def test_a_recursive_macro_fails_the_step_with_the_reason(product, product_client, hang_guard):
    factories.make_workflow(product, key="w", steps=[factories.email_step(body=RECURSIVE_MACRO)])
    run = _run(product_client, "w", {})
    _assert_step_failed(run, "Calls nest more than 64 deep")


def test_a_bound_tripped_by_the_recipient_template_fails_the_step_instead_of_skipping(product, product_client):
    factories.make_workflow(product, key="w", steps=[factories.email_step(to="{{ 'x' * data.n }}")])
    run = _run(product_client, "w", {"n": 10**7})
    _assert_step_failed(run, "10,000,000 characters")


def test_one_tenant_s_endless_template_fails_its_steps_and_another_tenant_s_delivery_goes_out(
    product, product_client, hang_guard, settings
):
    settings.ROWBELL_TEMPLATE_RENDER_SECONDS = 0.5
    factories.make_workflow(product, key="w", steps=[factories.email_step(body=NESTED_LOOPS)])
    other, other_key = factories.make_product(name="Other")
    other_client = client_for(other_key)
    factories.make_workflow(other, key="w", steps=[factories.email_step(body="Order {{ data.order }}")])

    # As a worker takes them, in order: the heavy template twice, then the other product's.
    heavy = [_run(product_client, "w", {"n": 1000}) for _ in range(2)]
    light = _run(other_client, "w", {"order": 7})

    for run in heavy:
        _assert_step_failed(run, "ran longer than 0.5 s and was stopped")
    delivery = Delivery.objects.get(run=light)
    deliveries_send(delivery_ids=[delivery.id])
    assert [m.body for m in mail.outbox] == ["Order 7"]


# --- The sandbox's bounds, one by one ------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, context",
    [
        ("{{ 'a'|center(data.n) }}", {"data": {"n": 10**5}}),
        ("{{ 'a'.center(data.n) }}", {"data": {"n": 10**5}}),
        ("{{ 'a'.ljust(data.n) }}{{ 'a'.zfill(data.n) }}", {"data": {"n": 10**5}}),
        ("{{ data.s|indent(data.n) }}", {"data": {"s": "a\nb", "n": 10**5}}),
        ("{{ data.s|replace('', 'xxxxxxxxxx') }}", {"data": {"s": "a" * 500}}),
        ("{{ data.s.replace('', 'xxxxxxxxxx') }}", {"data": {"s": "a" * 500}}),
        ("{{ data.s|wordwrap(1, wrapstring='x' * 100) }}", {"data": {"s": "a b " * 100}}),
        ("{{ '%*s'|format(data.n, 'a') }}", {"data": {"n": 10**5}}),
        ("{{ '%s' % data.l }}", {"data": {"l": ["x" * 600] * 3}}),
        ("{{ '{:>{}}'.format('a', data.n) }}", {"data": {"n": 10**5}}),
        ("{{ ('{0}' * 10).format(data.s) }}", {"data": {"s": "x" * 200}}),
        ("{{ ([data.s] * 100)|join(',') }}", {"data": {"s": "x" * 100}}),
        ("{{ ','.join([data.s] * 100) }}", {"data": {"s": "x" * 100}}),
        ("{{ [data.s] * 100 }}", {"data": {"s": "x" * 100}}),
        (
            "{% set a = [data.s] %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}{{ [b, b, b, b, b]|tojson }}",
            {"data": {"s": "x" * 100}},
        ),
        (
            "{% set a = [data.s] %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}{{ [b, b, b, b, b] ~ '' }}",
            {"data": {"s": "x" * 100}},
        ),
        ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", {}),
        ("{% set l = [1] %}{% for i in range(40) %}{% set _ = l.extend(l) %}{% endfor %}", {}),
        ("{% set ns = namespace(l=[data.s] * 9) %}{{ ns }}", {"data": {"s": "x" * 200}}),
        ("{{ (1).to_bytes(data.n, 'big')|length }}", {"data": {"n": 10**5}}),
        ("{{ lipsum(data.n) }}", {"data": {"n": 10**4}}),
        ("{{ (data.n ** data.n) > 1 }}", {"data": {"n": 10**5}}),
        (
            "{% set ns = namespace(x=data.n) %}{% for i in range(30) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
            {"data": {"n": 3}},
        ),
        ("{% for i in range(100) %}{{ data.s }}{% endfor %}", {"data": {"s": "x" * 100}}),
    ],
)
def test_the_sandbox_refuses_what_would_grow_past_the_limits(settings, hang_guard, source, context):
    settings.ROWBELL_TEMPLATE_MAX_CHARS = 1000
    with pytest.raises(TemplateLimitError):
        render(source, context)


@pytest.mark.parametrize(
    "source",
    [
        SET_BLOCK,
        "{% set x | upper %}" + REPEATED + "{% endset %}{{ x|length }}",
        "{% macro m() %}" + REPEATED + "{% endmacro %}{{ m()|length }}",
        "{% macro m() %}{{ caller()|length }}{% endmacro %}{% call m() %}" + REPEATED + "{% endcall %}",
        "{% filter upper %}" + REPEATED + "{% endfilter %}",
        "{% for j in [1] recursive %}" + REPEATED + "{% endfor %}",
        "{% if false %}{% block b %}" + REPEATED + "{% endblock %}{% endif %}{{ self.b()|length }}",
    ],
    ids=[
        "set-block",
        "set-block-with-filter",
        "macro",
        "call-block",
        "filter-block",
        "recursive-loop",
        "block-reference",
    ],
)
def test_a_block_stops_collecting_text_once_it_passes_the_size_limit(settings, hang_guard, memory_guard, source):
    settings.ROWBELL_TEMPLATE_RENDER_SECONDS = 30  # the size bound must stop it, not the clock
    # 20,000 times a text of 1,000,000 characters: joined unchecked, the block would ask for ~20 GB.
    with pytest.raises(TemplateLimitError, match=BLOCK_TOO_BIG):
        render(source, {"data": {"n": 20000, "s": "a" * 1000000}})


def test_a_block_collecting_text_within_the_limit_renders(settings):
    settings.ROWBELL_TEMPLATE_MAX_CHARS = 1000
    data = {"n": 10, "s": "a" * 100}  # exactly the limit
    assert render(SET_BLOCK, {"data": data}) == "1000"
    assert render("{% filter upper %}" + REPEATED + "{% endfilter %}", {"data": data}) == "A" * 1000
    with pytest.raises(TemplateLimitError, match="would collect more than 1,000 characters"):
        render(SET_BLOCK, {"data": {"n": 11, "s": "a" * 100}})


def test_a_filter_refuses_a_text_past_the_limit_before_copying_it(settings):
    settings.ROWBELL_TEMPLATE_MAX_CHARS = 1000
    with pytest.raises(TemplateLimitError, match="a printed value of 1,001 characters"):
        render("{{ data.s|upper }}", {"data": {"s": "a" * 1001}})


def test_a_render_stops_at_its_time_limit_in_a_loop_or_a_call(settings):
    settings.ROWBELL_TEMPLATE_RENDER_SECONDS = 0  # already over: the first iteration or call stops it
    for source in (
        "{% for i in range(3) %}{{ i }}{% endfor %}",
        "{% macro m() %}x{% endmacro %}{{ m() }}",
        "{% for i in [1] recursive %}{{ i }}{% endfor %}",
    ):
        with pytest.raises(TemplateLimitError, match="ran longer than 0 s"):
            render(source, {})


@pytest.mark.parametrize(
    "source, text",
    [
        (
            "{{ range(5)|join(',') }}|{{ '%05.1f'|format(3.14159) }}|{{ 'x'.center(5) }}|{{ [1, 2]|sum }}",
            "0,1,2,3,4|003.1|  x  |3",
        ),
        (
            "{{ 'a b'|replace(' ', '-') }}|{{ '{:>4}'.format(1) }}|{{ 2 ** 10 }}|{{ 'ab' * 3 }}|{{ [1] + [2] }}",
            "a-b|   1|1024|ababab|[1, 2]",
        ),
        (
            "{% set ns = namespace(items=[]) %}{% for i in range(3) %}{% set _ = ns.items.append(i) %}{% endfor %}"
            "{{ ns.items|join(' ') }}|{{ data.rows|map(attribute='n')|sum }}|{{ data|tojson }}",
            '0 1 2|3|{"rows": [{"n": 1}, {"n": 2}]}',
        ),
        ("{% macro li(x) %}<{{ x }}>{% endmacro %}{% for r in data.rows %}{{ li(r.n) }}{% endfor %}", "<1><2>"),
    ],
)
def test_ordinary_templates_render_as_before(source, text):
    assert render(source, {"data": {"rows": [{"n": 1}, {"n": 2}]}}) == text


def test_an_ordinary_error_is_still_a_render_error_not_a_limit():
    with pytest.raises(TemplateRenderError) as caught:
        render("{{ 1 / 0 }}", {})
    assert not isinstance(caught.value, TemplateLimitError)
    assert template_check("{% if false %}{{ 1 / 0 }}{% endif %}") is None  # left to run time


def test_celery_tasks_have_time_limits_and_the_customer_database_ones_longer():
    from apps.connections.tasks import event_logs_poll_task
    from config.celery_app import app

    assert 0 < app.conf.task_soft_time_limit < app.conf.task_time_limit
    assert event_logs_poll_task.soft_time_limit > app.conf.task_time_limit
