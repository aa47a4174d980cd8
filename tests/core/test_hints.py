import base64
import json

import pytest

from apps.core.hints import hint, message
from apps.runs.tasks import requests_start_task


def _strip_ids(m: dict) -> dict:
    m = json.loads(json.dumps(m))
    for key in ("id", "root_id", "origin"):
        m["headers"].pop(key)
    for key in ("correlation_id", "reply_to", "delivery_tag"):
        m["properties"].pop(key)
    return m


def test_hint_envelope_is_the_one_celery_writes(test_redis):
    requests_start_task.apply_async(args=[["abc"]], queue="low")
    celerys = json.loads(test_redis.rpop("low"))
    hint("apps.runs.tasks.requests_start", [["abc"]], queue="low")
    ours = json.loads(test_redis.rpop("low"))
    # Celery writes the task time limits it knows into the message; a hint leaves them empty, so that the
    # worker applies the task's own (CELERY_TASK_TIME_LIMIT, or the longer ones some tasks set).
    assert ours["headers"].pop("timelimit") == [None, None]
    celerys["headers"].pop("timelimit")
    assert _strip_ids(ours) == _strip_ids(celerys)
    assert base64.b64decode(ours["body"]) == base64.b64decode(celerys["body"])


def test_message_carries_the_task_arguments():
    m = message("apps.deliveries.tasks.deliveries_send", [[1, 2, 3]], "high")
    args, kwargs, _ = json.loads(base64.b64decode(m["body"]))
    assert args == [[1, 2, 3]] and kwargs == {}
    assert m["properties"]["delivery_info"]["routing_key"] == "high"


@pytest.mark.django_db(transaction=True)
def test_the_trigger_api_accepts_work_while_the_broker_is_down(product_with_key, settings):
    from apps.runs.models import TriggerRequest
    from tests import factories
    from tests.conftest import client_for

    product, key = product_with_key
    factories.make_workflow(product, key="w", steps=[factories.email_step()])
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    import apps.core.hints as hints

    hints._redis = None
    try:
        response = client_for(key).post("/api/v1/trigger", {"workflow": "w", "to": ["u1"]}, format="json")
    finally:
        hints._redis = None
    assert response.status_code == 202
    # The request is durable; the dispatcher hints it once the broker is back.
    assert TriggerRequest.objects.filter(id=response.json()["request_id"], status="accepted").exists()
