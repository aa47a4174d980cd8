"""Template variables, checked when a workflow is saved and published against what its runs will have,
rather than when a run renders.

What a notify step's templates see (apps/runs/engine.py `run_context`, apps/runs/steps.py):

- always: `data` (the trigger's data; `{}` for database triggers), `recipient`, `workflow` (key, version),
  `request_id`, `run_id`, `timestamp` (when the run was created), `steps` (what earlier steps produced, by
  id) and `step` (this step's id);
- with a database trigger: `event`; with `for_each: row` (the default) `row`, the run's own row, and each
  related row by its name (`customer`); with `for_each: statement` `rows` and `missing_ids` (the statement's rows, read when the run starts) and `row`
  when the statement changed one row;
- after a batch step: `batch` (`items`, `count`, `key`).

Names a template makes itself (`{% set %}`, loop variables, macros and their arguments) and Jinja's globals
(`range`, `lipsum`, `dict`, `cycler`, `joiner`, `namespace`) are told apart by Jinja itself
(`jinja2.meta.find_undeclared_variables` on the template as the project's sandbox parses it).

Below the top level, names are free-form: `data` is whatever the caller sends, and a recipient carries
properties of your own beside `id`, `email`, `phone`, `push_token(s)`, `chat_webhook` and `name`. The one
exception is `steps.<id>`, which must name a step that runs before this one: an earlier step of the same
list, an enclosing branch (its choice is recorded before its case runs), a step before it, or any step inside
an earlier branch (it may have run).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from functools import cache, lru_cache

from jinja2 import TemplateSyntaxError, meta, nodes

from apps.core.templating import environment
from apps.deliveries.channels import channel_get
from apps.deliveries.channels.base import TemplateField

ALWAYS = ("data", "recipient", "workflow", "request_id", "run_id", "timestamp", "steps", "step")
DATABASE = ("event", "row", "rows", "missing_ids")
# What a run of a database trigger has, by the trigger's `for_each`.
DATABASE_FOR_EACH = {"row": ("event", "row"), "statement": DATABASE}
AFTER_BATCH = ("batch",)


@cache
def template_fields(kind: str) -> dict[str, bool]:
    """The fields of a notify step on channel `kind` that are templates, each with whether it is HTML."""
    return {
        name: field.html
        for name, field in channel_get(kind).StepConfig().fields.items()
        if isinstance(field, TemplateField)
    }


def template_variables_check(
    *, trigger: str, steps: list[dict], for_each: str = "row", related: tuple = ()
) -> dict[str, list[str]]:
    """Errors by path (`steps[1].subject`) for every template that reads a variable its runs will not have.
    `trigger` is the trigger's type, `for_each` a database trigger's (`row` or `statement`) and `related` the
    names of its related rows (each a variable of per-row runs); `steps` are the definition's steps with
    their ids; a template that does not parse is left to the syntax check."""
    errors: dict[str, list[str]] = {}
    source = DATABASE_FOR_EACH.get(for_each, DATABASE) + tuple(related) if trigger == "database" else ()
    _walk(steps, "steps", trigger=trigger, source=source, before=(), batch=False, errors=errors)
    return errors


def _walk(
    steps: list[dict], path: str, *, trigger: str, source: tuple, before: tuple, batch: bool, errors: dict
) -> tuple[tuple, bool]:
    """Check `steps` (run after the steps `before`); return the ids that may have run after them, and
    whether a batch step may have run."""
    ran = list(before)
    for index, step in enumerate(steps):
        here = f"{path}[{index}]"
        if step.get("type") == "notify":
            names = ALWAYS + source + (AFTER_BATCH if batch else ())
            for field, html in template_fields(step["channel"]).items():
                if isinstance(step.get(field), str):
                    for reason in template_variables_problems(
                        step[field], html=html, names=names, earlier=tuple(ran), trigger=trigger
                    ):
                        errors.setdefault(f"{here}.{field}", []).append(reason)
        ran.append(step["id"])
        if step.get("type") == "branch":
            cases = [(case["steps"], f"{here}.branches[{i}].steps") for i, case in enumerate(step["branches"])]
            inside: list = []
            for block, where in cases + [(step.get("otherwise") or [], f"{here}.otherwise")]:
                after, batched = _walk(
                    block, where, trigger=trigger, source=source, before=tuple(ran), batch=batch, errors=errors
                )
                inside.extend(after[len(ran) :])
                batch = batch or batched
            ran.extend(inside)
        elif step.get("type") == "batch":
            batch = True
    return tuple(ran), batch


def template_variables_problems(source: str, *, html: bool, names: tuple, earlier: tuple, trigger: str) -> list[str]:
    """Why `source` reads a variable it will not have (one reason each), given the top-level `names` a run
    provides there and the ids of the steps that may have run before it."""
    try:
        tree = _environment(html).parse(source)
    except TemplateSyntaxError:
        return []
    problems = []
    undeclared = meta.find_undeclared_variables(tree)
    available = ", ".join(names)
    for name in sorted(undeclared - set(names)):
        if name in DATABASE and trigger != "database":
            problems.append(
                f"Unknown variable '{name}': only workflows with a database trigger have it. "
                f"Templates here can use: {available}."
            )
        elif name in DATABASE:
            problems.append(
                f"Unknown variable '{name}': a trigger with `for_each: row` gives each run its own `row`; "
                f"`{name}` exists with `for_each: statement`. Templates here can use: {available}."
            )
        elif name in AFTER_BATCH:
            problems.append(
                f"Unknown variable '{name}': it exists only after a batch step. Templates here can use: {available}."
            )
        else:
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            problems.append(f"Unknown variable '{name}'.{hint} Templates here can use: {available}.")
    if "steps" in undeclared and not _made_in(tree, "steps"):
        for ref in sorted(_step_references(tree) - set(earlier)):
            close = difflib.get_close_matches(ref, earlier, n=1, cutoff=0.6)
            hint = f" Did you mean 'steps.{close[0]}'?" if close else ""
            ran = f" Steps that run before it: {', '.join(earlier)}." if earlier else " No step runs before it."
            problems.append(f"'steps.{ref}' names no step that runs before this one.{hint}{ran}")
    return problems


@lru_cache(maxsize=2)
def _environment(html: bool):
    return environment(autoescape=html)


def _made_in(tree: nodes.Template, name: str) -> bool:
    """Whether the template makes a variable of this name itself (then `name.x` is not the run's)."""
    return any(node.name == name and node.ctx in ("store", "param") for node in tree.find_all(nodes.Name))


def _step_references(tree: nodes.Template) -> set[str]:
    """The ids in `steps.<id>` and `steps['<id>']`."""
    found = set()
    references: Iterator[nodes.Getattr | nodes.Getitem] = tree.find_all((nodes.Getattr, nodes.Getitem))
    for node in references:
        if not (isinstance(node.node, nodes.Name) and node.node.name == "steps" and node.node.ctx == "load"):
            continue
        if isinstance(node, nodes.Getattr):
            found.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found.add(node.arg.value)
    return found
