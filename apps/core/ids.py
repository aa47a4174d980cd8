import uuid


def uuid_or_none(value) -> uuid.UUID | None:
    """`value` as a UUID, or None when it is not one (an id from a request body: unknown, not a 500)."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
