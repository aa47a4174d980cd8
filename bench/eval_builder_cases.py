"""The workflow builder's evaluation set: requests in words over a sample shop schema, each with what its draft
must satisfy (bench/eval_builder.py runs them against the configured endpoint).

A check takes the drafted workflow (as POST /api/v1/workflows takes it, normalized) and returns "" when it holds,
else why not.
"""

from __future__ import annotations

SCHEMA = """
CREATE TABLE public.customers (id bigserial PRIMARY KEY, email text NOT NULL, name text, phone text, locale text,
                               created_at timestamptz NOT NULL DEFAULT now());
COMMENT ON TABLE public.customers IS 'People who buy from the shop.';
CREATE TABLE public.orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES public.customers(id),
                            total numeric(10, 2) NOT NULL, status text NOT NULL DEFAULT 'new',
                            paid boolean NOT NULL DEFAULT false, created_at timestamptz NOT NULL DEFAULT now());
COMMENT ON COLUMN public.orders.status IS 'new, paid, shipped, delivered, refunded or cancelled';
CREATE TABLE public.invoices (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES public.customers(id),
                              amount numeric(10, 2) NOT NULL, due_at date NOT NULL, paid_at timestamptz,
                              status text NOT NULL DEFAULT 'open');
COMMENT ON COLUMN public.invoices.status IS 'open, paid, overdue or void';
CREATE TABLE public.subscriptions (id bigserial PRIMARY KEY,
                                   customer_id bigint NOT NULL REFERENCES public.customers(id),
                                   plan text NOT NULL, status text NOT NULL DEFAULT 'trialing',
                                   trial_ends_at timestamptz, canceled_at timestamptz);
COMMENT ON COLUMN public.subscriptions.status IS 'trialing, active, past_due or canceled';
CREATE TABLE public.shipments (id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES public.orders(id),
                               carrier text, tracking_number text, status text NOT NULL DEFAULT 'label_created');
COMMENT ON COLUMN public.shipments.status IS 'label_created, in_transit, delivered or lost';
CREATE TABLE public.support_tickets (id bigserial PRIMARY KEY,
                                     customer_id bigint NOT NULL REFERENCES public.customers(id),
                                     subject text NOT NULL, priority text NOT NULL DEFAULT 'normal',
                                     status text NOT NULL DEFAULT 'open');
COMMENT ON COLUMN public.support_tickets.priority IS 'low, normal, high or urgent';
"""

TABLES = ("customers", "orders", "invoices", "subscriptions", "shipments", "support_tickets")


def _steps(w: dict) -> list[dict]:
    out, stack = [], list(w.get("steps") or [])
    while stack:
        step = stack.pop(0)
        out.append(step)
        for branch in step.get("branches") or []:
            stack.extend(branch.get("steps") or [])
        stack.extend(step.get("otherwise") or [])
    return out


def table(name: str):
    def check(w):
        got = (w.get("trigger") or {}).get("table")
        return "" if got == f"public.{name}" else f"the trigger watches {got}, not public.{name}"

    return check


def api_trigger(w):
    return "" if (w.get("trigger") or {}).get("type") == "api" else "not an API trigger"


def channel(kind: str):
    def check(w):
        kinds = {s.get("channel") for s in _steps(w) if s.get("type") == "notify"}
        return "" if kind in kinds else f"no {kind} step (channels: {sorted(k for k in kinds if k)})"

    return check


def step_type(kind: str):
    def check(w):
        return "" if any(s.get("type") == kind for s in _steps(w)) else f"no {kind} step"

    return check


def recipient(field: str, column: str):
    """The trigger maps the recipient's `field` to a column named `column` (of the row or a related table)."""

    def check(w):
        path = ((w.get("trigger") or {}).get("recipient") or {}).get(field, "")
        return "" if path.endswith(f".{column}") else f"recipient.{field} is {path or 'not mapped'}"

    return check


def watches(column: str):
    """The trigger reacts to `column`: a classification over it, or updates of it."""

    def check(w):
        trigger = w.get("trigger") or {}
        text = str(trigger.get("classification") or "") + str(trigger.get("columns") or "")
        return "" if f"'{column}'" in text else f"the trigger does not look at {column}"

    return check


def mentions(word: str):
    """Some notify step's text names `word` (a template variable or plain text)."""

    def check(w):
        texts = " ".join(str(s.get(k, "")) for s in _steps(w) for k in ("subject", "body", "text", "title", "message"))
        return "" if word in texts else f"no step mentions {word}"

    return check


CASES = [
    (
        "When an order becomes paid, email its customer a receipt with the total.",
        [table("orders"), watches("paid"), channel("email"), recipient("email", "email"), mentions("total")],
    ),
    (
        "Email the customer when their order is cancelled.",
        [table("orders"), watches("status"), channel("email"), recipient("email", "email")],
    ),
    (
        "When a shipment is marked delivered, email the customer who placed the order.",
        [table("shipments"), watches("status"), channel("email")],
    ),
    (
        "Text the customer by SMS with the tracking number when a shipment goes in transit.",
        [table("shipments"), channel("sms"), mentions("tracking_number")],
    ),
    (
        "When an invoice becomes overdue, email the customer a reminder with the amount and due date.",
        [table("invoices"), watches("status"), channel("email"), mentions("amount")],
    ),
    ("Send the team webhook every new support ticket.", [table("support_tickets"), channel("webhook")]),
    (
        "When a support ticket is created with urgent priority, post it to the team webhook.",
        [table("support_tickets"), watches("priority"), channel("webhook")],
    ),
    (
        "Welcome new customers by email when they sign up.",
        [table("customers"), channel("email"), recipient("email", "email")],
    ),
    (
        "When a subscription is canceled, email the customer to confirm the cancellation.",
        [table("subscriptions"), watches("status"), channel("email")],
    ),
    (
        "When a subscription becomes past due, email the customer, then post to the team webhook a day later if it "
        "is still past due.",
        [table("subscriptions"), channel("email"), channel("webhook"), step_type("wait")],
    ),
    (
        "When an invoice is paid, email a thank-you that names the plan-free amount paid.",
        [table("invoices"), channel("email"), mentions("amount")],
    ),
    (
        "Notify the team webhook whenever an order is refunded.",
        [table("orders"), watches("status"), channel("webhook")],
    ),
    (
        "When an order of more than 500 is paid, email the customer a thank-you note.",
        [table("orders"), channel("email"), watches("paid")],
    ),
    (
        "A digest: collect paid orders for an hour and post their count to the team webhook.",
        [table("orders"), step_type("batch"), channel("webhook")],
    ),
    ("Send a password reset email through the API with a link in the data.", [api_trigger, channel("email")]),
    ("An API-triggered workflow that sends an SMS one-time code to the recipient.", [api_trigger, channel("sms")]),
    (
        "An API-triggered welcome email, then a follow-up email three days later.",
        [api_trigger, channel("email"), step_type("wait")],
    ),
    (
        "When a shipment is lost, email the customer an apology and post the order to the team webhook.",
        [table("shipments"), watches("status"), channel("email"), channel("webhook")],
    ),
    (
        "Email customers whose trial ends, when the subscription status goes from trialing to active, to thank them.",
        [table("subscriptions"), watches("status"), channel("email")],
    ),
    (
        "When a high or urgent ticket is opened, email the customer that support is on it.",
        [table("support_tickets"), watches("priority"), channel("email"), recipient("email", "email")],
    ),
    (
        "When a new order is created, email the customer an order confirmation with its id and total.",
        [table("orders"), channel("email"), mentions("total")],
    ),
]
