from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.exceptions import Conflict, InvalidInput
from apps.core.text import text_problem

from .models import ApiKey, KeyScope, Organization, Product

# Longest overlap a rotation may grant the previous key.
MAX_ROTATION_GRACE = timedelta(days=7)


def _key_create(*, scope: str, name: str, product: Product | None = None, organization: Organization | None = None):
    return ApiKey.objects.create_key(name=name[:50], scope=scope, product=product, organization=organization)


@transaction.atomic
def platform_key_create(*, name: str, actor: str = "platform") -> tuple[ApiKey, str]:
    key, raw = _key_create(scope=KeyScope.PLATFORM, name=name)
    audit_record(
        action="api_key.created",
        target_type="api_key",
        target_id=key.prefix,
        actor=actor,
        data={"scope": KeyScope.PLATFORM, "name": key.name},
    )
    return key, raw


@transaction.atomic
def product_create(*, name: str, actor: str) -> tuple[Product, str]:
    """Onboard a product; returns it with its first API key (shown once)."""
    product = Product.objects.create(name=name)
    key, raw = _key_create(scope=KeyScope.PRODUCT, name=f"{name} (initial)", product=product)
    audit_record(
        action="product.created",
        target_type="product",
        target_id=product.id,
        product_id=product.id,
        actor=actor,
        data={"name": name},
    )
    audit_record(
        action="api_key.created",
        target_type="api_key",
        target_id=key.prefix,
        product_id=product.id,
        actor=actor,
        data={"scope": KeyScope.PRODUCT},
    )
    return product, raw


_UNSET = object()


@transaction.atomic
def product_settings_update(
    *,
    product: Product,
    sandbox: bool | None = None,
    escalation_webhook=_UNSET,
    retention_days=_UNSET,
    ai: dict | None = None,
    actor: str,
) -> Product:
    """Sandbox the whole product (its deliveries are held for review), choose the webhook endpoint that is
    told about failed runs (None: email to the operators only), and how many days its finished work is kept
    (`retention_days`, 1 to 3,650; None: ROWBELL_RETENTION_DAYS; apps.runs.retention), and the workflow
    builder's model (`ai`: any of {"ai_base_url", "ai_model", "ai_api_key"}; "" falls back to the ROWBELL_AI_*
    settings). The key is audited as set or cleared, never its value."""
    # The endpoint model is deliveries' (built on tenants): reached through the relation, not imported.
    WebhookEndpoint = Product._meta.get_field("escalation_webhook").related_model

    changes: dict[str, Any] = {}
    if sandbox is not None and sandbox != product.sandbox:
        product.sandbox = changes["sandbox"] = sandbox
    if escalation_webhook is not _UNSET:
        endpoint = None
        if escalation_webhook is not None:
            endpoint = WebhookEndpoint.objects.filter(product=product, id=escalation_webhook).first()
            if endpoint is None:
                raise InvalidInput("No webhook endpoint with this id in this product.", field="escalation_webhook")
            if endpoint.connection_id:
                raise InvalidInput(
                    "This endpoint receives row events; use a plain endpoint.", field="escalation_webhook"
                )
        product.escalation_webhook = endpoint
        changes["escalation_webhook"] = str(endpoint.id) if endpoint else None
    if retention_days is not _UNSET and retention_days != product.retention_days:
        product.retention_days = changes["retention_days"] = retention_days
    for name, value in (ai or {}).items():
        if value != getattr(product, name):
            setattr(product, name, value)
            changes[name] = ("set" if value else "cleared") if name == "ai_api_key" else value
    if changes:
        product.save(
            update_fields=["sandbox", "escalation_webhook", "retention_days", "ai_base_url", "ai_model", "ai_api_key"]
        )
        audit_record(
            action="product.updated",
            target_type="product",
            target_id=product.id,
            product_id=product.id,
            actor=actor,
            data=changes,
        )
    return product


EXTERNAL_ID_MAX_LENGTH = Organization._meta.get_field("external_id").max_length or 200
_EXTERNAL_ID_UNIQUE = "organization_external_id_unique_per_product"


def external_id_clean(external_id: str | None) -> str | None:
    """The external id as stored: surrounding whitespace dropped, '' (or only whitespace) as None.

    Raises InvalidInput (field `external_id`) for text PostgreSQL cannot store (apps/core/text.py) or longer
    than 200 characters; the API refuses both first, this guards every other caller (the admin's form too).
    """
    if external_id is None:
        return None
    external_id = external_id.strip()
    problem = text_problem(external_id)
    if problem:
        raise InvalidInput(problem, field="external_id")
    if len(external_id) > EXTERNAL_ID_MAX_LENGTH:
        raise InvalidInput(
            f"Ensure this field has no more than {EXTERNAL_ID_MAX_LENGTH} characters.", field="external_id"
        )
    return external_id or None


def external_id_taken_reason(*, holder: Organization) -> str:
    """Why an external id was refused, naming the organization that has it and what to do."""
    return (
        f"Organization '{holder.name}' ({holder.id}) of this product already has external id "
        f"'{holder.external_id}': choose another, or clear it on that organization first."
    )


def _external_id_taken(exc: IntegrityError) -> bool:
    """Whether the unique external id refused the write (any other refusal is a bug, not the input)."""
    return getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) == _EXTERNAL_ID_UNIQUE


def _external_id_conflict(*, product_id, external_id: str | None) -> Conflict:
    holder = Organization.objects.filter(product_id=product_id, external_id=external_id).first()
    if holder is None:  # cleared again since: the caller may simply retry
        return Conflict("Another organization had this external id a moment ago: retry.", field="external_id")
    return Conflict(external_id_taken_reason(holder=holder), field="external_id")


def organization_create(
    *, product: Product, name: str, external_id: str | None = None, sandbox: bool = False, actor: str
) -> tuple[Organization, str]:
    """Create an organization of `product` with its first API key; returns it and the key (shown once).

    `external_id` is the product's own id for it (see external_id_clean for its shape); `sandbox` holds every
    delivery of its runs for review. Raises Conflict
    (field `external_id`) when another organization of the product has it, InvalidInput when it is not text
    PostgreSQL can store.
    """
    external_id = external_id_clean(external_id)
    try:
        with transaction.atomic():
            organization = Organization.objects.create(
                product=product, name=name, external_id=external_id, sandbox=sandbox
            )
            key, raw = _key_create(
                scope=KeyScope.ORGANIZATION,
                name=f"{name} (initial)",
                product=product,
                organization=organization,
            )
            audit_record(
                action="organization.created",
                target_type="organization",
                target_id=organization.id,
                product_id=product.id,
                organization_id=organization.id,
                actor=actor,
                data={"name": name, "external_id": external_id, "sandbox": sandbox},
            )
            audit_record(
                action="api_key.created",
                target_type="api_key",
                target_id=key.prefix,
                product_id=product.id,
                organization_id=organization.id,
                actor=actor,
                data={"scope": KeyScope.ORGANIZATION},
            )
    except IntegrityError as exc:
        if not _external_id_taken(exc):
            raise
        raise _external_id_conflict(product_id=product.id, external_id=external_id) from None
    return organization, raw


def organization_update(
    *,
    organization: Organization,
    name: str | None = None,
    external_id: Any = _UNSET,
    sandbox: bool | None = None,
    actor: str,
) -> Organization:
    """Rename an organization, set its external id (None or '' clears it) and/or its sandbox (every delivery of
    its runs held for review). What changed is audited as
    `organization.updated` with the new values, like `product.updated`; when nothing changed nothing is written.

    Raises Conflict (field `external_id`) when another organization of the product has the external id,
    InvalidInput when it is not text PostgreSQL can store.
    """
    changes: dict[str, Any] = {}
    if name is not None and name != organization.name:
        changes["name"] = name
    if sandbox is not None and sandbox != organization.sandbox:
        changes["sandbox"] = sandbox
    if external_id is not _UNSET:
        external_id = external_id_clean(external_id)
        if external_id != organization.external_id:
            changes["external_id"] = external_id
    if not changes:
        return organization
    before = {field: getattr(organization, field) for field in changes}
    try:
        with transaction.atomic():
            for field, value in changes.items():
                setattr(organization, field, value)
            organization.save(update_fields=list(changes))
            audit_record(
                action="organization.updated",
                target_type="organization",
                target_id=organization.id,
                product_id=organization.product_id,
                organization_id=organization.id,
                actor=actor,
                data=changes,
            )
    except IntegrityError as exc:
        for field, value in before.items():
            setattr(organization, field, value)
        if not _external_id_taken(exc):
            raise
        raise _external_id_conflict(product_id=organization.product_id, external_id=external_id) from None
    return organization


@transaction.atomic
def api_key_rotate(
    *, product: Product, organization: Organization | None = None, grace_seconds: int = 0, actor: str
) -> tuple[ApiKey, str, timezone.datetime | None]:
    """Issue a new key for a product (or organization) and retire its current keys.

    With grace_seconds == 0 the previous keys stop working at once (revoked); otherwise they keep
    working until now + grace_seconds (at most 7 days) and then expire.
    Returns (new key, raw key, when the previous keys stop working or None if there were none).
    """
    if grace_seconds < 0 or timedelta(seconds=grace_seconds) > MAX_ROTATION_GRACE:
        raise InvalidInput("Must be between 0 and 604800 seconds (7 days).", field="grace_seconds")
    now = timezone.now()
    scope = KeyScope.ORGANIZATION if organization else KeyScope.PRODUCT
    current = ApiKey.objects.select_for_update().filter(
        scope=scope, product=product, organization=organization, revoked=False
    )
    current_prefixes = list(current.values_list("prefix", flat=True))
    retire_at = None
    if current_prefixes:
        if grace_seconds == 0:
            current.update(revoked=True)
            retire_at = now
        else:
            retire_at = now + timedelta(seconds=grace_seconds)
            # Never extend a key that already expires sooner.
            current.filter(expiry_date__isnull=True).update(expiry_date=retire_at)
            current.filter(expiry_date__gt=retire_at).update(expiry_date=retire_at)
    owner = organization or product
    key, raw = _key_create(
        scope=scope, name=f"{owner.name} (rotated {now:%Y-%m-%d})", product=product, organization=organization
    )
    audit_record(
        action="api_key.rotated",
        target_type="api_key",
        target_id=key.prefix,
        product_id=product.id,
        organization_id=organization.id if organization else None,
        actor=actor,
        data={
            "retired": current_prefixes,
            "grace_seconds": grace_seconds,
            "retired_at": retire_at.isoformat() if retire_at else None,
        },
    )
    return key, raw, retire_at


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor: str) -> ApiKey:
    """Revoke a key at once; repeat calls are harmless."""
    updated = ApiKey.objects.filter(pk=key.pk, revoked=False).update(revoked=True)
    if updated:
        audit_record(
            action="api_key.revoked",
            target_type="api_key",
            target_id=key.prefix,
            product_id=key.product_id,
            organization_id=key.organization_id,
            actor=actor,
        )
    key.refresh_from_db()
    return key
