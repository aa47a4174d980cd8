"""The console's "Describe a workflow" page: the builder (apps.builder) from the admin, with the same answer as
`POST /api/v1/workflows/generate`, and a "save as draft" that saves it as any workflow is saved. Nothing is
published from here: the workflow's own page publishes it."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from apps.builder.services import workflow_generate
from apps.connections.models import Connection
from apps.core.admin_lists import actor_of
from apps.core.exceptions import ApplicationError, flatten_errors
from apps.core.ids import uuid_or_none
from apps.tenants.models import Product
from apps.workflows.models import Workflow


def describe_workflow(request):
    """GET: the form. POST `do=generate`: the builder's answer on the page. POST `do=save`: the drafted workflow
    saved as a draft (created, or the named workflow's draft replaced), then its page."""
    if not request.user.has_perm("workflows.add_workflow"):
        raise PermissionDenied
    values = {k: request.POST.get(k, request.GET.get(k, "")) for k in ("product", "connection", "workflow", "prompt")}
    product = Product.objects.filter(id=values["product"]).first() if uuid_or_none(values["product"]) else None
    if values["connection"] and not uuid_or_none(values["connection"]):
        values["connection"] = ""
    answer, error = None, ""
    if request.method == "POST" and product is None:
        error = "Choose the product the workflow is for."
    elif request.method == "POST" and request.POST.get("do") == "save":
        saved = _save(request, product, values)
        if saved is not None:
            return saved
        error = "The draft could not be saved: see the messages above."
    elif request.method == "POST":
        try:
            answer = workflow_generate(
                product=product,
                prompt=values["prompt"],
                connection_id=values["connection"] or None,
                workflow_key=values["workflow"] or None,
                actor=actor_of(request),
            )
        except ApplicationError as exc:
            error = exc.message + "".join(f" {f}: {r}" for f, r in exc.fields.items() if r != exc.message)
    context = {
        **admin.site.each_context(request),
        "title": "Describe a workflow",
        "subtitle": None,
        "values": values,
        "products": Product.objects.order_by("name").values_list("id", "name"),
        "connections": Connection.objects.filter(product=product).order_by("name").values_list("id", "name")
        if product
        else [],
        "workflows": Workflow.objects.filter(product=product).order_by("key").values_list("key", flat=True)
        if product
        else [],
        "answer": answer,
        "answer_json": json.dumps(answer["workflow"], indent=2) if answer and answer.get("workflow") else "",
        "error": error,
    }
    return TemplateResponse(request, "dashboard/describe.html", context)


def _save(request, product, values):
    from rest_framework.exceptions import ValidationError

    from apps.workflows.definition.format import DEFINITION_FIELDS
    from apps.workflows.services import workflow_create, workflow_update

    try:
        drafted = json.loads(request.POST.get("drafted") or "{}")
    except ValueError:
        drafted = None
    if not isinstance(drafted, dict):
        messages.error(request, "The draft is not a workflow: generate it again.")
        return None
    if values["workflow"] and not request.user.has_perm("workflows.change_workflow"):
        messages.error(request, "Your group may create workflows, not change one's draft.")
        return None
    definition = {k: drafted[k] for k in DEFINITION_FIELDS if k in drafted}
    try:
        if values["workflow"]:
            workflow = Workflow.objects.get(product=product, key=values["workflow"])
            workflow_update(workflow=workflow, definition=definition, actor=actor_of(request))
        else:
            workflow = workflow_create(
                product=product,
                key=drafted.get("key", ""),
                name=drafted.get("name", ""),
                definition=definition,
                actor=actor_of(request),
            )
    except ValidationError as exc:
        for item in flatten_errors(exc.detail):
            messages.error(request, f"{item['field']}: {item['reason']}")
        return None
    except (ApplicationError, Workflow.DoesNotExist) as exc:
        messages.error(request, getattr(exc, "message", str(exc)))
        return None
    messages.success(request, f"Saved as the draft of '{workflow.key}': look at it, then publish it.")
    return HttpResponseRedirect(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
