"""Model instances built without Model.__init__, for the rows a hot path makes or reads by the thousand.

Django's __init__ walks every field, fills defaults and goes through each foreign key's descriptor; for
a run, a delivery or a request built per webhook that was about a third of a worker's CPU (measured with
cProfile on the API path). `instance_build` gives the same object for code that reads attributes and
related objects: the field values go straight into the instance's __dict__ (where Django's own
descriptors read them) and the related objects into its fields cache, as `Model.from_db` leaves them.

It does not run defaults, validation or signals: give every column the caller relies on. The instance
is unsaved (`_state.adding` is True) unless `saved` says it came from the database.
"""

from __future__ import annotations

from typing import TypeVar

from django.db import models
from django.db.models.base import ModelState

M = TypeVar("M", bound=models.Model)


def instance_build(model: type[M], values: dict, *, related: dict | None = None, saved: bool = False) -> M:
    """An instance of `model` holding `values` (by attname: `product_id`, not `product`) and the related
    objects of `related` (by field name: {"run": run}); `saved` marks it as read from the database."""
    instance = object.__new__(model)
    state = instance._state = ModelState()
    state.adding = not saved
    state.db = "default" if saved else None
    instance.__dict__.update(values)
    if related:
        state.fields_cache.update(related)
    return instance
