"""Rows for tests, built through the same services the API uses."""

from apps.subscriptions.services import subscription_create
from apps.tenants.principals import Tenant
from apps.tenants.services import organization_create, product_create
from apps.workflows.services import workflow_create, workflow_publish


def make_product(name="Acme"):
    return product_create(name=name, actor="test")


def make_organization(product, name="Org"):
    return organization_create(product=product, name=name, actor="test")


def tenant_of(product, organization=None):
    scope = "organization" if organization else "product"
    return Tenant.of(scope=scope, key_prefix="test", product=product, organization=organization)


def make_endpoint(product, url, **kwargs):
    return subscription_create(product=product, url=url, actor="test", **kwargs)


def make_workflow(product, key="welcome", steps=None, publish=True, sandbox=False, **definition):
    workflow = workflow_create(
        product=product,
        key=key,
        sandbox=sandbox,
        definition={"trigger": {"type": "api"}, "steps": steps, **definition},
        actor="test",
    )
    if publish:
        workflow_publish(workflow=workflow, actor="test")
        workflow.refresh_from_db()
    return workflow


def webhook_step(endpoint, step_id="hook"):
    return {"id": step_id, "type": "notify", "channel": "webhook", "webhook": str(endpoint.id)}


def email_step(step_id="mail", subject="Hello {{ recipient.name }}", body="Order {{ data.order }}", **extra):
    return {"id": step_id, "type": "notify", "channel": "email", "subject": subject, "body": body, **extra}


OUR_APPS = ("tenants", "workflows", "runs", "deliveries", "audit", "connections", "core")
