"""What a database trigger's links make of a changed row: its related rows (read by key) and its recipient.

A trigger's links, as stored in its definition (apps/workflows/definition/format.py `DatabaseTrigger`):
`related` ({name: {"table", "column", "key"}}), `recipient` ({field: path, "properties": {name: path}}) and
`organization` (a path), each a `row.<column>` or `<related name>.<column>` path. Used by runs when they
start (apps/runs/triggers/database.py) and by the preview of a draft on a real row (services.workflow_preview).
"""

from __future__ import annotations

from apps.connections.rows import rows_read_indexed
from apps.tenants.models import Organization
from apps.tenants.selectors import organizations_by_external_id

# Recipient properties that are text; `push_tokens` is a list of text.
TEXT_FIELDS = ("id", "email", "phone", "name", "locale", "timezone")


def trigger_links(trigger: dict) -> dict:
    """A trigger's links: {"related", "recipient", "organization"}, each present when set."""
    return {k: trigger[k] for k in ("related", "recipient", "organization") if trigger.get(k)}


def related_read(*, connection, trigger: dict, rows: list[dict | None]) -> list[dict[str, dict | None]]:
    """The related rows of each of `rows` (None for a row that is gone): [{name: row, or None when the
    row's column is null or names no row}], in the order of `rows`. One query per related table for the
    whole list (apps.connections.rows.rows_read_indexed). Raises psycopg.Error when the customer database
    cannot be read."""
    found: list[dict[str, dict | None]] = [{} for _ in rows]
    for name, link in (trigger.get("related") or {}).items():
        values, owners = [], []
        for index, row in enumerate(rows):
            found[index][name] = None
            if row is not None and row.get(link["column"]) is not None:
                values.append(row[link["column"]])
                owners.append(index)
        if values:
            read = rows_read_indexed(
                connection=connection, rows_from={"table": link["table"], "key": [link["key"]]}, ids=values
            )
            for position, index in enumerate(owners):
                found[index][name] = read.get(position)
    return found


def links_problem(trigger: dict, *, row: dict | None, related: dict, key=None) -> str:
    """Why the links of a changed row cannot be trusted, or "" when they can: the row is gone (deleted before it
    was read), a column a link or mapping reads is no longer in its row (a migration renamed or dropped it since
    the workflow was saved), or a non-null reference names no related row. Only a row whose links all hold may
    route, address or skip a message: any of these fails the run, escalated, instead of a skipped message or
    a message sent to nobody. A null reference is not a problem (its related row is None: the meant skip).
    `key` names the row in the message. Checks only what the trigger maps (recipient, organization, related)."""
    links = trigger_links(trigger)
    if not links:
        return ""
    table = trigger.get("table", "the table")
    if row is None:
        return (
            f"The row {'' if key is None else f'{key} '}is gone from {table} (deleted before its run read it): "
            "there is nobody to address or route it to."
        )
    for name, link in (links.get("related") or {}).items():
        column = link["column"]
        if column not in row:
            return _gone(column, table, f"trigger.related.{name}.column")
        if row[column] is not None and related.get(name) is None:
            return (
                f"{table}: the row's {column} = {row[column]!r} names no row of {link['table']} (trigger.related."
                f"{name}): correct the row, or the workflow, then re-run."
            )
    mapped = {
        f"trigger.recipient.{field}": path
        for field, path in (links.get("recipient") or {}).items()
        if field != "properties"
    }
    mapped |= {
        f"trigger.recipient.properties.{name}": path
        for name, path in ((links.get("recipient") or {}).get("properties") or {}).items()
    }
    if links.get("organization"):
        mapped["trigger.organization"] = links["organization"]
    for field, path in mapped.items():
        root, _, column = path.partition(".")
        source = row if root == "row" else related.get(root)
        if source is not None and column not in source:
            where = table if root == "row" else (links.get("related") or {}).get(root, {}).get("table", root)
            return _gone(column, where, f"{field} reads {path}")
    return ""


def _gone(column: str, table: str, where: str) -> str:
    return (
        f"Column '{column}' is no longer in {table} ({where}): a migration renamed or dropped it since the workflow "
        "was saved. Update the workflow's trigger, then re-run."
    )


def link_value(path: str, *, row: dict | None, related: dict):
    """The value at `row.<column>` or `<related name>.<column>`; None when the row or the column is missing."""
    root, _, column = path.partition(".")
    source = row if root == "row" else related.get(root)
    return None if source is None else source.get(column)


def recipient_from(trigger: dict, *, row: dict | None, related: dict) -> dict | None:
    """The recipient a trigger's `recipient` mapping reads from a row and its related rows: text properties
    as text, `push_tokens` as a list of text, custom `properties` as they are; a path whose row or column is
    missing leaves its property out (the channel then skips a recipient without its address). None when the
    trigger maps no recipient."""
    mapping = trigger.get("recipient")
    if not mapping:
        return None
    recipient: dict = {}
    for field, path in mapping.items():
        if field == "properties":
            continue
        value = link_value(path, row=row, related=related)
        if value is None:
            continue
        if field == "push_tokens":
            recipient[field] = [str(t) for t in value] if isinstance(value, list) else [str(value)]
        elif field in TEXT_FIELDS:
            recipient[field] = str(value)
    for name, path in (mapping.get("properties") or {}).items():
        value = link_value(path, row=row, related=related)
        if value is not None:
            recipient[name] = value
    return recipient


def organizations_route(*, product_id, items: list[tuple[str, object]]) -> list[tuple[Organization | None, str]]:
    """The organization each row routes to, by a trigger's `organization` path: `items` is [(path, the
    value at that path, as link_value read it)]; returns [(organization or None, error)] in the same order,
    the error ("" when found) saying why a row routes nowhere (its value is null, or no organization of the
    product has it as external id). Values compare as text without surrounding whitespace, as external ids
    are stored (a char(5) column reads '42   '). One query for the whole list
    (apps.tenants.selectors.organizations_by_external_id). Used by runs (which then fail, escalated, on an
    error) and by previews (which show it)."""
    texts = [None if value is None else str(value).strip() for _, value in items]
    found = organizations_by_external_id(product_id=product_id, external_ids=[t for t in texts if t])
    routed: list[tuple[Organization | None, str]] = []
    for (path, value), text in zip(items, texts, strict=True):
        organization = found.get(text) if text else None
        if organization is not None:
            routed.append((organization, ""))
        elif not text:
            routed.append((None, f"The row names no organization: {path} is {'null' if value is None else 'blank'}."))
        else:
            routed.append(
                (
                    None,
                    f"No organization of this product has the external id {str(value)!r} ({path}): give the "
                    "organization that owns the row this external_id, or correct the row, then re-run.",
                )
            )
    return routed
