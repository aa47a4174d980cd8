"""The demo of `make run`: created once in the service database, then the banner that says where to look."""

from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.dashboard.groups import READ_ONLY, REVIEWERS
from apps.deliveries.services import provider_config_put
from apps.runs.services import trigger_create
from apps.subscriptions.services import subscription_create
from apps.tenants.models import Product
from apps.tenants.principals import Tenant
from apps.tenants.services import api_key_rotate, organization_create, platform_key_create, product_create
from apps.workflows.services import workflow_create, workflow_publish

DEMO_PRODUCT = "Demo Shop"
DEMO_SENDER = "orders@demo-shop.example"
KEYS_FILE = Path(settings.BASE_DIR) / ".run" / "demo.env"
SINK_PORT, SMTP_PORT = 8001, 8025  # the `sink` process of Procfile.dev

WORKFLOW_STEPS = [
    {"id": "notify-backend", "type": "notify", "channel": "webhook", "webhook": None},
    {
        "id": "email-customer",
        "type": "notify",
        "channel": "email",
        "subject": "Your order {{ data.order_id }} has shipped",
        "body": "Hi {{ recipient.name }},\n\nOrder {{ data.order_id }} is on its way.\n",
    },
]

WELCOME_STEP = {
    "id": "welcome-email",
    "type": "notify",
    "channel": "email",
    "subject": "Welcome to Demo Shop, {{ recipient.name }}",
    "body": "Hi {{ recipient.name }}, your account is ready.",
    "html": "<h2>Welcome, {{ recipient.name }}!</h2><p>Your account is ready.</p>",
}

# Staff users of the demo, one per group below the superuser (password = username).
DEMO_STAFF = {"reviewer": REVIEWERS, "viewer": READ_ONLY}


def banner(
    *,
    port: int,
    sink_port: int = SINK_PORT,
    smtp_port: int = SMTP_PORT,
    headline: str = "The demo:",
    verbose: bool | None = None,
) -> str:
    """Where to look: the admin and its logins, the review queue, the API docs, the sink and the demo's keys;
    under `make run` (`verbose` not None), also what its terminal shows."""
    base = f"http://127.0.0.1:{port}"
    keys_file = KEYS_FILE.relative_to(settings.BASE_DIR) if KEYS_FILE.is_relative_to(settings.BASE_DIR) else KEYS_FILE
    lines = [
        "",
        f"  {headline}",
        f"  Admin:        {base}/admin/   (login: admin / admin; also reviewer / reviewer, viewer / viewer)",
        f"  Review queue: {base}/admin/review/   (the demo's welcome email is held there: release it)",
        f"  API docs:     {base}/api/docs/   (also /api/redoc/; the schema at /api/schema/)",
        f"  Sink:         http://127.0.0.1:{sink_port}/   (the webhooks and emails sent; SMTP on 127.0.0.1:{smtp_port})",
        f"  Demo keys:    {keys_file}   (source it for the README's curl examples)",
    ]
    if verbose is not None:
        lines.append(
            "  Logs:         every task, beat tick, request and sink message (plain `make run`: warnings and errors)"
            if verbose
            else "  Logs:         warnings and errors; `make run VERBOSE=1` shows every task, beat tick and request"
        )
    return "\n".join(lines) + "\n"


class Command(BaseCommand):
    help = (
        "Create the demo once (admin user, keys, product, webhook and email provider pointing at the local sink, "
        "workflows, a first order); print where to look."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--sink-port", type=int, default=SINK_PORT)
        parser.add_argument("--smtp-port", type=int, default=SMTP_PORT)
        parser.add_argument(
            "--no-banner", action="store_true", help="Print no banner (`make run`: its banner process prints it)."
        )

    def handle(self, *args, port, sink_port, smtp_port, no_banner, **options):
        product = Product.objects.filter(name=DEMO_PRODUCT).first()
        if product is None:
            self._seed(port, sink_port, smtp_port)
        elif not KEYS_FILE.exists():
            # Another checkout seeded this database: keys are stored hashed, so issue new demo keys.
            self._reissue_keys(product, port)
        if not no_banner:
            self.stdout.write(banner(port=port, sink_port=sink_port, smtp_port=smtp_port))

    @transaction.atomic
    def _seed(self, port, sink_port, smtp_port):
        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@localhost", "admin")
        _, platform_key = platform_key_create(name="demo platform key", actor="seed")
        product, product_key = product_create(name=DEMO_PRODUCT, actor="seed")
        organization, organization_key = organization_create(product=product, name="Demo Org", actor="seed")
        endpoint = subscription_create(
            product=product, url=f"http://127.0.0.1:{sink_port}/demo", description="Local webhook sink", actor="seed"
        )
        # The product's own email provider, as a real product would have one: SMTP to the sink's server.
        provider_config_put(
            product=product,
            channel="email",
            provider="smtp",
            credentials={},
            options={"host": "127.0.0.1", "port": smtp_port, "security": "none", "from_email": DEMO_SENDER},
            actor="seed",
        )
        steps = [dict(s) for s in WORKFLOW_STEPS]
        steps[0]["webhook"] = str(endpoint.id)
        workflow = workflow_create(
            product=product,
            key="order-shipped",
            name="Order shipped",
            definition={"trigger": {"type": "api"}, "steps": steps},
            actor="seed",
        )
        workflow_publish(workflow=workflow, actor="seed")
        demo = Tenant.of(scope="product", key_prefix="seed", product=product)
        # A first order: its webhook and its email are on the sink's page as soon as the processes run.
        trigger_create(
            tenant=demo,
            workflow="order-shipped",
            recipients=[{"id": "ann", "name": "Ann", "email": "ann@example.com"}],
            data={"order_id": "A-1000"},
            priority="normal",
        )
        # A sandboxed workflow, triggered once: its email waits in the review queue (/admin/review/).
        welcome = workflow_create(
            product=product,
            key="welcome",
            name="Welcome email",
            sandbox=True,
            definition={"trigger": {"type": "api"}, "steps": [WELCOME_STEP]},
            actor="seed",
        )
        workflow_publish(workflow=welcome, actor="seed")
        trigger_create(
            tenant=demo,
            workflow="welcome",
            recipients=[{"id": "ann", "name": "Ann", "email": "ann@example.com"}],
            data={},
            priority="normal",
        )
        for username, group in DEMO_STAFF.items():
            if not User.objects.filter(username=username).exists():
                User.objects.create_user(username, f"{username}@localhost", username, is_staff=True).groups.add(
                    Group.objects.get(name=group)
                )
        self._write_keys(port, platform_key, product_key, organization_key, endpoint)
        self.stdout.write(
            f"  Seeded the demo: product '{DEMO_PRODUCT}', workflows 'order-shipped' and 'welcome' (sandboxed)."
        )

    @transaction.atomic
    def _reissue_keys(self, product, port):
        organization = product.organizations.order_by("created_at").first()
        _, platform_key = platform_key_create(name="demo platform key", actor="seed")
        _, product_key, _ = api_key_rotate(product=product, actor="seed")
        _, organization_key, _ = api_key_rotate(product=product, organization=organization, actor="seed")
        endpoint = product.webhook_endpoints.order_by("created_at").first()
        self._write_keys(port, platform_key, product_key, organization_key, endpoint)
        self.stdout.write(f"  Issued new demo keys for the existing '{DEMO_PRODUCT}'.")

    def _write_keys(self, port, platform_key, product_key, organization_key, endpoint):
        KEYS_FILE.parent.mkdir(exist_ok=True)
        KEYS_FILE.write_text(
            "# Demo keys, written once by `make run` (keys are shown only once).\n"
            f"export ROWBELL_URL=http://127.0.0.1:{port}\n"
            f"export ROWBELL_PLATFORM_KEY={platform_key}\n"
            f"export ROWBELL_PRODUCT_KEY={product_key}\n"
            f"export ROWBELL_ORGANIZATION_KEY={organization_key}\n"
            f"export ROWBELL_WEBHOOK_ID={endpoint.id}\n"
            f"export ROWBELL_WEBHOOK_SECRET={endpoint.secret}\n"
        )
