"""Table names as users give them: `schema.table`, `table` (in public), or with double-quoted parts."""

from __future__ import annotations

import re

# A quoted part holds anything (a doubled quote for a quote); an unquoted one is an identifier, case kept.
_PART = r'("(?:[^"]|"")+"|[^\W\d][\w$]*)'
_QUALIFIED = re.compile(rf"^(?:{_PART}\.)?{_PART}$")


def _unquote(part: str) -> str:
    return part[1:-1].replace('""', '"') if part.startswith('"') else part


def table_parse(text: str) -> tuple[str, str]:
    """(schema, table) as exact catalog names from `schema.table`, `table` (schema public), or with parts in
    double quotes as SQL writes them (`crm."Customer.Notes"`, a name with a dot or a quote). Unquoted parts are
    taken exactly as written, case included, and are identifiers (letters, digits, _ and $) (`crm.CustomerNotes` is the table PostgreSQL lists as
    CustomerNotes), as the connection's `tables` list prints them. Raises ValueError naming what is wrong."""
    match = _QUALIFIED.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError("A table as schema.table (exact names; put a part in double quotes if it holds a dot).")
    schema, table = _unquote(match.group(1) or "public"), _unquote(match.group(2))
    for part in (schema, table):
        if len(part.encode()) > 63 or any(ord(ch) < 32 for ch in part):
            raise ValueError("A name of at most 63 bytes, without control characters.")
    return schema, table


def table_display(schema: str, table: str) -> str:
    """`schema.table` as table_parse reads it back: plain where the names are identifiers, double-quoted
    parts where they hold anything else (`crm."Customer.Notes"`)."""

    def part(name: str) -> str:
        return name if re.fullmatch(r"[^\W\d][\w$]*", name) else '"' + name.replace('"', '""') + '"'

    return f"{part(schema)}.{part(table)}"


def did_you_mean(name, known) -> str:
    """ " Did you mean 'total'?" when `name` is close to one of `known` (a typo, another case), else "": for the
    end of a "No column ..." error: the closest by difflib's ratio (at least 0.6), else a known name that contains
    it or that it contains (a rename that added a suffix); case ignored."""
    import difflib

    if not isinstance(name, str) or not name:
        return ""
    by_folded = {str(k).lower(): str(k) for k in known if str(k) and not str(k).startswith("\0")}
    folded = name.lower()
    # A near spelling first, then a name kept inside a longer one (email -> email_address; 4 letters at least).
    containing = sorted(
        (k for k in by_folded if min(len(k), len(folded)) >= 4 and (folded in k or k in folded)),
        key=lambda k: abs(len(k) - len(folded)),
    )
    close = difflib.get_close_matches(folded, list(by_folded), n=1, cutoff=0.6) or containing[:1]
    return f" Did you mean '{by_folded[close[0]]}'?" if close else ""
