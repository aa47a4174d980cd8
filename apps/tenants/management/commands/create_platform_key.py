from django.core.management.base import BaseCommand

from apps.tenants.services import platform_key_create


class Command(BaseCommand):
    help = "Create a platform API key (it onboards products). The key is the last line of output."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="A label for the key, e.g. who holds it.")

    def handle(self, *args, name, **options):
        key, raw = platform_key_create(name=name, actor="cli")
        self.stderr.write(f"Platform key '{key.name}' created (prefix {key.prefix}). It is shown only once:")
        self.stdout.write(raw)
