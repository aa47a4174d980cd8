"""A local webhook receiver for the demo: answers 200, keeps the last messages, shows them on a page.

Each message's signature is checked with the `standardwebhooks` package against the secrets of the
product endpoints that point at this sink.
"""

import html
import json
import threading
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.core.management.base import BaseCommand
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from apps.core import exactjson
from apps.deliveries.models import WebhookEndpoint

PAGE = """<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="3">
<title>Rowbell webhook sink</title><style>
body{{font:14px system-ui,sans-serif;margin:2rem;color:#222}} h1{{font-size:1.3rem}}
.m{{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;margin:.8rem 0}}
.ok{{color:#177a2b}} .bad{{color:#b3261e}} pre{{background:#f6f6f6;padding:.5rem;overflow:auto}}
small{{color:#666}}</style></head><body><h1>Rowbell webhook sink</h1>
<p>{count} message(s) received on port {port}; newest first; this page refreshes every 3 seconds.</p>{items}
</body></html>"""


class Command(BaseCommand):
    help = "Run a local webhook receiver that shows what it received (for `make run`)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--keep", type=int, default=200, help="How many messages to keep.")

    def handle(self, *args, port, keep, **options):
        received = deque(maxlen=keep)
        lock = threading.Lock()

        def verify(path, body, headers):
            from django.db import connection

            try:
                # The URL is stored encrypted: endpoints are found by their plain host, then by the decrypted URL.
                local = WebhookEndpoint.objects.filter(host__in=("127.0.0.1", "localhost", "::1", "[::1]"))
                now = timezone.now()
                secrets = [s for e in local if f":{port}/" in e.url for s in e.signing_secrets(now)]
            finally:
                connection.close()  # a sink waits for long: it holds no database session meanwhile
            for secret in secrets:
                try:
                    Webhook(secret).verify(body, headers, json_parse=False)
                    return True
                except WebhookVerificationError:
                    continue
            return False

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                item = {
                    "received_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "path": self.path,
                    "webhook_id": headers.get("webhook-id", ""),
                    "signature_valid": verify(self.path, body, headers),
                    "body": body.decode("utf-8", errors="replace"),
                }
                with lock:
                    received.appendleft(item)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_GET(self):
                with lock:
                    items = list(received)
                if self.path.startswith("/messages.json"):
                    payload = json.dumps(items).encode()
                    content_type = "application/json"
                else:
                    payload = PAGE.format(count=len(items), port=port, items="".join(self._item(i) for i in items))
                    payload = payload.encode()
                    content_type = "text/html; charset=utf-8"
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            @staticmethod
            def _item(item):
                try:
                    pretty = exactjson.dumps(exactjson.loads(item["body"]), indent=2)  # every digit, as sent
                except ValueError:
                    pretty = item["body"]
                mark = (
                    '<span class="ok">signature valid</span>'
                    if item["signature_valid"]
                    else '<span class="bad">signature NOT valid</span>'
                )
                return (
                    f'<div class="m"><b>{html.escape(item["webhook_id"])}</b> {mark} '
                    f"<small>{item['received_at']} POST {html.escape(item['path'])}</small>"
                    f"<pre>{html.escape(pretty)}</pre></div>"
                )

            def log_message(self, fmt, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.stdout.write(f"Webhook sink listening on http://127.0.0.1:{port}/")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
