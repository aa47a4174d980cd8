"""The review queue: held sandbox deliveries as their recipients would see them, released or discarded
one or many at a time through the same services as the API."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse

from apps.core.admin_lists import BoundedCountPaginator, actor_of
from apps.core.exceptions import ApplicationError
from apps.core.ids import uuid_or_none
from apps.deliveries.channels import channel_get
from apps.deliveries.models import Delivery, DeliveryStatus
from apps.deliveries.services import MAX_REVIEW_BATCH, deliveries_discard, deliveries_release
from apps.tenants.models import Product

PER_PAGE = 20
# Inside the preview frame: nothing is fetched from outside (no remote images, fonts or styles), so that
# reviewing a message neither tells its sender the reviewer's address nor counts as an open of the
# tracking pixel; inline styles and embedded (data:) images still show.
PREVIEW_POLICY = (
    '<meta http-equiv="Content-Security-Policy" '
    "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
)


def _preview(delivery: Delivery) -> dict:
    """What the recipient would see, as the delivery's channel shows it (Channel.preview). HTML email is shown
    in a sandboxed frame (no scripts, no same-origin access), never inline."""
    preview = channel_get(delivery.channel).preview(delivery)
    if preview.get("html"):
        preview["html"] = PREVIEW_POLICY + preview["html"]
    return preview


def _act(request) -> None:
    if not request.user.has_perm("deliveries.review_delivery"):
        raise PermissionDenied("Your group may not release or discard held deliveries.")
    verb = request.POST.get("do")
    if verb not in ("release", "discard"):
        messages.error(request, "Choose release or discard.")
        return
    chosen = request.POST.getlist("message_id")
    if not chosen:
        messages.warning(request, "Select at least one delivery.")
        return
    if len(chosen) > MAX_REVIEW_BATCH:
        messages.error(request, f"At most {MAX_REVIEW_BATCH} deliveries at a time. Nothing was done.")
        return
    service = deliveries_release if verb == "release" else deliveries_discard
    try:
        done = service(product_id=None, message_ids=chosen, actor=actor_of(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return
    past = "Released" if verb == "release" else "Discarded"
    left = len(chosen) - len(done)
    text = f"{past} {len(done)} deliver{'y' if len(done) == 1 else 'ies'}" + (
        f"; {left} no longer held (reviewed meanwhile), left alone." if left else "."
    )
    (messages.success if done else messages.warning)(request, text)


def review_queue(request):
    """GET: the held deliveries, oldest first, by product. POST: release or discard the selected ones."""
    if not request.user.has_perm("deliveries.view_delivery"):
        raise PermissionDenied
    if request.method == "POST":
        _act(request)
        return HttpResponseRedirect(request.get_full_path())
    held = (
        Delivery.objects.filter(status=DeliveryStatus.HELD)
        .select_related("product", "organization", "run__workflow_version__workflow")
        .order_by("id")
    )
    product_id = request.GET.get("product") or ""
    if product_id:
        held = held.filter(product_id=product_id) if _uuid(product_id) else held.none()
    page = BoundedCountPaginator(held, PER_PAGE).get_page(request.GET.get("page"))
    rows = [
        {"delivery": d, "preview": _preview(d), "workflow": d.run.workflow_version.workflow.key if d.run_id else ""}
        for d in page.object_list
    ]
    from django.contrib import admin

    context = {
        **admin.site.each_context(request),
        "title": "Review queue",
        "subtitle": None,
        "page": page,
        "rows": rows,
        "products": Product.objects.order_by("name").values_list("id", "name"),
        "product_id": product_id,
        "may_review": request.user.has_perm("deliveries.review_delivery"),
    }
    return TemplateResponse(request, "dashboard/review_queue.html", context)


def _uuid(value: str) -> bool:
    return uuid_or_none(value) is not None
