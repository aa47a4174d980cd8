"""The demo's local sink (the `sink` process of `make run`): takes webhooks over HTTP and email over SMTP, and
shows the last of them on one page (apps/deliveries/sink.py)."""

from django.core.management.base import BaseCommand

from apps.deliveries.sink import SinkMessages, sink_http_server, sink_smtp_server


class Command(BaseCommand):
    help = "Run a local webhook receiver and SMTP server that show what they received (for `make run`)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8001, help="HTTP: webhooks, and the page that shows all.")
        parser.add_argument("--smtp-port", type=int, default=8025, help="SMTP (0: no SMTP server).")
        parser.add_argument("--keep", type=int, default=200, help="How many messages to keep.")

    def handle(self, *args, port, smtp_port, keep, **options):
        messages = SinkMessages(keep)
        smtp = sink_smtp_server(messages, port=smtp_port) if smtp_port else None
        server = sink_http_server(messages, port=port, smtp_port=smtp_port)
        if smtp is not None:
            smtp.start()
        email = f", email on smtp://127.0.0.1:{smtp_port}" if smtp is not None else ""
        self.stdout.write(f"Sink listening: webhooks and the page on http://127.0.0.1:{port}/{email}")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            if smtp is not None:
                smtp.stop()
