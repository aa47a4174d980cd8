from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.dashboard.groups import READ_ONLY, REVIEWERS
from apps.runs.services import trigger_create
from apps.subscriptions.services import subscription_create
from apps.tenants.models import Product
from apps.tenants.principals import Tenant
from apps.tenants.services import api_key_rotate, organization_create, platform_key_create, product_create
from apps.workflows.services import workflow_create, workflow_publish

DEMO_PRODUCT = "Demo Shop"
KEYS_FILE = Path(settings.BASE_DIR) / ".run" / "demo.env"

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


class Command(BaseCommand):
    help = (
        "Create the demo (admin user, keys, product, webhook to the local sink, a workflow) once; print where to look."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--sink-port", type=int, default=8001)

    def handle(self, *args, port, sink_port, **options):
        product = Product.objects.filter(name=DEMO_PRODUCT).first()
        if product is None:
            self._seed(port, sink_port)
        elif not KEYS_FILE.exists():
            # Another checkout seeded this database: keys are stored hashed, so issue new demo keys.
            self._reissue_keys(product, port)
        base = f"http://127.0.0.1:{port}"
        keys_file = (
            KEYS_FILE.relative_to(settings.BASE_DIR) if KEYS_FILE.is_relative_to(settings.BASE_DIR) else KEYS_FILE
        )
        self.stdout.write(
            "\n"
            "  Rowbell is starting.\n"
            f"  Admin:        {base}/admin/   (login: admin / admin; also reviewer / reviewer, viewer / viewer)\n"
            f"  API docs:     {base}/api/docs/   (also /api/redoc/; the schema at /api/schema/)\n"
            f"  Webhook sink: http://127.0.0.1:{sink_port}/   (what the demo webhook received)\n"
            f"  Demo keys:    {keys_file}   (source it for the README's curl examples)\n"
        )

    @transaction.atomic
    def _seed(self, port, sink_port):
        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@localhost", "admin")
        _, platform_key = platform_key_create(name="demo platform key", actor="seed")
        product, product_key = product_create(name=DEMO_PRODUCT, actor="seed")
        organization, organization_key = organization_create(product=product, name="Demo Org", actor="seed")
        endpoint = subscription_create(
            product=product, url=f"http://127.0.0.1:{sink_port}/demo", description="Local webhook sink", actor="seed"
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
            tenant=Tenant.of(scope="product", key_prefix="seed", product=product),
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
        self.stdout.write(f"  Seeded the demo: product '{DEMO_PRODUCT}', workflow 'order-shipped'.")

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
