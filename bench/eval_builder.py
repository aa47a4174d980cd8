"""`make eval-builder`: the workflow builder against the configured model, over the evaluation set in
bench/eval_builder_cases.py.

Needs ROWBELL_AI_BASE_URL and ROWBELL_AI_MODEL (and ROWBELL_AI_API_KEY if the endpoint asks for one), e.g. a
local Ollama: `ROWBELL_AI_BASE_URL=http://127.0.0.1:11434/v1 ROWBELL_AI_MODEL=qwen2.5-coder:14b make
eval-builder`. It makes its own service database and a sample shop database (customers, orders, invoices,
subscriptions, shipments, support tickets; no rows) on the benchmarks' PostgreSQL server (bench/common.py), a
product with a webhook endpoint and an SMS provider, then asks the builder each request. A request counts as
valid when the builder answers a draft (it passed every check), and correct when the draft also satisfies the
case's own checks (the right table, column, channel, recipient...). Reports the shares, the rounds, the tokens
and the time, and writes them to docs/benchmarks.md for the endpoint and model it ran against.

    python bench/eval_builder.py [--only N] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import database_url, databases_recreate, migrate, pg_args, pg_server, psql  # noqa: E402
from bench.docs import section_write  # noqa: E402

SERVICE_DB, SHOP_DB, READER = "rowbell_eval", "rowbell_eval_shop", "rowbell_eval_reader"


def run_cases(*, shop: dict, only: int | None = None) -> dict:
    """Inside Django (the service database migrated): the product, connection and endpoint, then every case.
    Returns {"cases": [{"prompt", "outcome", "correct", "why", "rounds", "tokens", "seconds"}]}."""
    from apps.builder.services import workflow_generate
    from apps.connections.services import connection_create
    from apps.core.exceptions import ApplicationError
    from apps.deliveries.services import provider_config_put
    from apps.subscriptions.services import subscription_create
    from apps.tenants.services import product_create
    from bench.eval_builder_cases import CASES

    product, _ = product_create(name="Shop", actor="eval")
    connection, _ = connection_create(product=product, name="shop", sslmode="disable", actor="eval", **shop)
    subscription_create(product=product, url="http://127.0.0.1:9/team", description="the team's channel", actor="eval")
    provider_config_put(
        product=product,
        channel="sms",
        provider="twilio",
        credentials={"account_sid": "AC" + "0" * 32, "auth_token": "0" * 32},
        options={"sender": "+15550000000"},
        actor="eval",
    )
    results = []
    for prompt, checks in CASES[:only] if only else CASES:
        started = time.monotonic()
        try:
            answer = workflow_generate(product=product, prompt=prompt, connection_id=connection.id, actor="eval")
        except ApplicationError as exc:
            answer = {"outcome": "error", "errors": [{"field": None, "reason": exc.message}], "rounds": 0}
        seconds = time.monotonic() - started
        why = []
        if answer["outcome"] == "draft":
            why = [reason for reason in (check(answer["workflow"]) for check in checks) if reason]
        else:
            why = [f"{e.get('field')}: {e.get('reason')}" for e in answer.get("errors", [])[:3]]
        results.append(
            {
                "prompt": prompt,
                "outcome": answer["outcome"],
                "correct": answer["outcome"] == "draft" and not why,
                "why": why,
                "rounds": answer.get("rounds", 0),
                "tokens": sum((answer.get("tokens") or {}).values()),
                "seconds": round(seconds, 2),
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return {"cases": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, help="Run the first N cases only.")
    parser.add_argument("--no-write", action="store_true", help="Do not write docs/benchmarks.md.")
    args = parser.parse_args()
    base_url, model = os.environ.get("ROWBELL_AI_BASE_URL", ""), os.environ.get("ROWBELL_AI_MODEL", "")
    if not base_url or not model:
        print(
            "eval-builder: set ROWBELL_AI_BASE_URL and ROWBELL_AI_MODEL (and ROWBELL_AI_API_KEY if the endpoint asks "
            "for one), e.g. ROWBELL_AI_BASE_URL=http://127.0.0.1:11434/v1 ROWBELL_AI_MODEL=qwen2.5-coder:14b",
            file=sys.stderr,
        )
        return 2
    from bench.eval_builder_cases import SCHEMA

    databases_recreate(SERVICE_DB, SHOP_DB)
    subprocess.run(["psql", *pg_args(), "-d", "postgres", "-qc", f"DROP ROLE IF EXISTS {READER}"], capture_output=True)
    psql(SHOP_DB, SCHEMA)
    grants = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "connection_grants",
            "--user",
            READER,
            "--tables",
            "public.orders",
            "--read",
            "public.customers,public.invoices,public.subscriptions,public.shipments,public.support_tickets",
        ],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    psql(SHOP_DB, grants + f"\nALTER ROLE {READER} PASSWORD 'eval';")
    for name in ("invoices", "subscriptions", "shipments", "support_tickets", "customers"):
        psql(SHOP_DB, f"GRANT SELECT, TRIGGER ON public.{name} TO {READER};")
    host, port, _ = pg_server()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": database_url(SERVICE_DB),
        "ROWBELL_CONNECTION_ALLOW": "127.0.0.0/8,::1/128",
        "ROWBELL_OUTBOUND_ALLOW": "127.0.0.0/8,::1/128",
        "ROWBELL_AI_DAILY_CALLS": "100000",
        "ROWBELL_AI_DAILY_TOKENS": "1000000000",
    }
    migrate(env)
    shop = {"host": host, "port": port, "database": SHOP_DB, "user": READER, "password": "eval"}
    started = time.monotonic()
    out = subprocess.run(  # each case's line goes to stderr as it finishes; the summary to stdout
        [
            sys.executable,
            "manage.py",
            "shell",
            "--no-imports",
            "-c",
            "import json; from bench.eval_builder import run_cases; "
            f"print(json.dumps(run_cases(shop={shop!r}, only={args.only!r})))",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    elapsed = time.monotonic() - started
    cases = json.loads(out.splitlines()[-1])["cases"]
    total = len(cases)
    valid = sum(c["outcome"] == "draft" for c in cases)
    correct = sum(c["correct"] for c in cases)
    rounds = [c["rounds"] for c in cases if c["rounds"]]
    tokens = sum(c["tokens"] for c in cases)
    lines = [
        f"Endpoint `{base_url}`, model `{model}`, {total} requests over the sample shop schema "
        f"(bench/eval_builder_cases.py), in {elapsed:.0f} s.",
        "",
        "| Measure | Figure |",
        "|---|---|",
        f"| Valid drafts (passed every check) | {valid} of {total} ({valid / total:.0%}) |",
        f"| Correct drafts (and the case's own checks) | {correct} of {total} ({correct / total:.0%}) |",
        f"| Rounds per request (mean, max) | {sum(rounds) / max(len(rounds), 1):.2f}, {max(rounds, default=0)} |",
        f"| Tokens in all | {tokens:,} |",
        f"| Seconds per request (mean) | {sum(c['seconds'] for c in cases) / max(total, 1):.1f} |",
        "",
        "Requests that missed:",
        "",
        *[f"- {c['prompt']} ({c['outcome']}): {'; '.join(c['why'])}" for c in cases if not c["correct"]],
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        section_write(
            "eval-builder",
            "## Workflow builder: `make eval-builder`\n\nCommand: `ROWBELL_AI_BASE_URL=... ROWBELL_AI_MODEL=... "
            "make eval-builder`.\n\n" + body,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
