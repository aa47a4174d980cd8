"""The demo's local sink, the `sink` process of `make run` (`manage.py webhook_sink`): a webhook receiver and an
SMTP server that keep the last messages they took and show them, newest first, on one page.

- Webhooks (any POST) are answered 200. The page says whether each signature is valid, checked with the
  `standardwebhooks` package against the secrets of the endpoints that point at the sink.
- Email (SMTP, aiosmtpd: any sender, any recipient, nothing relayed) shows its subject, sender, recipients and
  text. Its HTML part opens on a page of its own, `/emails/<number>`, that runs no script and loads nothing, so
  reading it counts no open.
- `/messages.json` lists both kinds, as the page shows them.

Each message is also logged (logger `rowbell.sink`, INFO: `make run VERBOSE=1` prints them).
"""

from __future__ import annotations

import html
import json
import logging
import threading
from collections import deque
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from django.db import connection
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from apps.core import exactjson

from .models import WebhookEndpoint

logger = logging.getLogger("rowbell.sink")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

PAGE = """<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="3">
<title>Rowbell sink</title><style>
body{{font:14px system-ui,sans-serif;margin:2rem;color:#222}} h1{{font-size:1.3rem}}
.m{{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;margin:.8rem 0}}
.ok{{color:#177a2b}} .bad{{color:#b3261e}} pre{{background:#f6f6f6;padding:.5rem;overflow:auto;white-space:pre-wrap}}
.kind{{display:inline-block;min-width:4.5rem;font-size:.8rem;text-transform:uppercase;color:#555}}
small{{color:#666}}</style></head><body><h1>Rowbell sink</h1>
<p>{count} message(s): webhooks POSTed to http://127.0.0.1:{port}/..., email sent to SMTP {smtp}; newest first;
this page refreshes every 3 seconds.</p>{items}
</body></html>"""

# The HTML of an email, shown as its recipient would see it: no script, nothing fetched (no open is counted).
EMAIL_HTML_POLICY = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"


class SinkMessages:
    """The last `keep` messages the sink took, newest first, shared by its HTTP and SMTP threads. Each has a
    `number`, counted from 1, by which the page links to it."""

    def __init__(self, keep: int = 200):
        self._items: deque[dict] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._count = 0

    def add(self, item: dict) -> dict:
        """Keep `item` (a dict from webhook_item or email_item), numbered; return it."""
        with self._lock:
            self._count += 1
            item = {"number": self._count, **item}
            self._items.appendleft(item)
        return item

    def all(self) -> list[dict]:
        """Every message kept, newest first."""
        with self._lock:
            return list(self._items)

    def get(self, number: int) -> dict | None:
        """The message numbered `number`, or None once it is gone (or never was)."""
        with self._lock:
            return next((item for item in self._items if item["number"] == number), None)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def webhook_signature_valid(body: bytes, headers: dict, *, port: int) -> bool:
    """Whether the webhook `body` carries a valid Standard Webhooks signature by one of the secrets of the
    endpoints whose URL names this sink (a loopback host and `port`)."""
    try:
        # The URL is stored encrypted: endpoints are found by their plain host, then by the decrypted URL.
        local = WebhookEndpoint.objects.filter(host__in=LOOPBACK_HOSTS)
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


def webhook_item(*, path: str, body: bytes, headers: dict, signature_valid: bool) -> dict:
    """What the sink keeps of a webhook it was sent."""
    return {
        "kind": "webhook",
        "received_at": _now(),
        "path": path,
        "webhook_id": headers.get("webhook-id", ""),
        "signature_valid": signature_valid,
        "body": body.decode("utf-8", errors="replace"),
    }


def _part_text(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return ""
    try:
        return part.get_content()
    except (LookupError, UnicodeError):  # an unknown or lying charset: the bytes, as well as they decode
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""


def email_item(*, content: bytes, mail_from: str, rcpt_tos: list[str]) -> dict:
    """What the sink keeps of an email it was sent: the envelope, the headers a reader looks at (`message_id`
    is Rowbell's `X-Rowbell-Message-Id`, the delivery's `msg_...`) and the text and HTML bodies."""
    message = BytesParser(policy=policy.default).parsebytes(content)
    assert isinstance(message, EmailMessage)  # policy.default parses into EmailMessage
    return {
        "kind": "email",
        "received_at": _now(),
        "mail_from": mail_from,
        "rcpt_to": list(rcpt_tos),
        "from": str(message.get("From", "")),
        "to": str(message.get("To", "")),
        "subject": str(message.get("Subject", "")),
        "message_id": str(message.get("X-Rowbell-Message-Id", "")),
        "text": _part_text(message, "plain"),
        "html": _part_text(message, "html"),
    }


def _webhook_html(item: dict) -> str:
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
        f'<div class="m"><span class="kind">webhook</span> <b>{html.escape(item["webhook_id"])}</b> {mark} '
        f"<small>{item['received_at']} POST {html.escape(item['path'])}</small>"
        f"<pre>{html.escape(pretty)}</pre></div>"
    )


def _email_html(item: dict) -> str:
    view = f' · <a href="/emails/{item["number"]}">HTML version</a>' if item["html"] else ""
    message_id = f" · {html.escape(item['message_id'])}" if item["message_id"] else ""
    return (
        f'<div class="m"><span class="kind">email</span> <b>{html.escape(item["subject"] or "(no subject)")}</b> '
        f"<small>{item['received_at']} from {html.escape(item['from'] or item['mail_from'])} "
        f"to {html.escape(item['to'] or ', '.join(item['rcpt_to']))}{message_id}{view}</small>"
        f"<pre>{html.escape(item['text'])}</pre></div>"
    )


def sink_page(items: list[dict], *, port: int, smtp_port: int | None) -> str:
    """The sink's page: every message kept, newest first, webhooks and email side by side."""
    smtp = f"127.0.0.1:{smtp_port}" if smtp_port else "(off)"
    rows = "".join(_email_html(i) if i["kind"] == "email" else _webhook_html(i) for i in items)
    return PAGE.format(count=len(items), port=port, smtp=smtp, items=rows)


def sink_host_allowed(host: str) -> bool:
    """Whether a request's `Host` header names this machine (`127.0.0.1`, `localhost` or `[::1]`, any port)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name.split("]", 1)[0] + "]"
    else:
        name = name.rsplit(":", 1)[0] if ":" in name else name
    return name in {"127.0.0.1", "localhost", "[::1]"}


def sink_http_server(messages: SinkMessages, *, port: int, smtp_port: int | None) -> ThreadingHTTPServer:
    """The sink's HTTP side on 127.0.0.1:`port` (not started): POST takes a webhook; GET shows the page,
    `/messages.json` or an email's HTML (`/emails/<number>`)."""

    class Handler(BaseHTTPRequestHandler):
        def parse_request(self) -> bool:
            # Only requests addressed to this machine by name: a page elsewhere whose name was made to resolve
            # to 127.0.0.1 (DNS rebinding) would otherwise read the emails here, password resets included.
            if not super().parse_request():
                return False
            if not sink_host_allowed(self.headers.get("Host", "")):
                self._answer(b"The sink answers requests to 127.0.0.1 or localhost only.", "text/plain", status=403)
                return False
            return True

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            item = messages.add(
                webhook_item(
                    path=self.path,
                    body=body,
                    headers=headers,
                    signature_valid=webhook_signature_valid(body, headers, port=port),
                )
            )
            logger.info(
                "Webhook %s to %s (signature %s)",
                item["webhook_id"] or "without a webhook-id",
                item["path"],
                "valid" if item["signature_valid"] else "NOT valid",
            )
            self._answer(b"ok", "text/plain")

        def do_GET(self):
            if self.path.startswith("/messages.json"):
                self._answer(json.dumps(messages.all()).encode(), "application/json")
            elif self.path.startswith("/emails/"):
                number = self.path.removeprefix("/emails/").split("?")[0]
                item = messages.get(int(number)) if number.isdigit() else None
                if item is None or item["kind"] != "email":
                    self._answer(b"No such email (the sink keeps the last ones only).", "text/plain", status=404)
                else:
                    self._answer(item["html"].encode(), "text/html; charset=utf-8", csp=EMAIL_HTML_POLICY)
            else:
                page = sink_page(messages.all(), port=port, smtp_port=smtp_port)
                self._answer(page.encode(), "text/html; charset=utf-8")

        def _answer(self, payload: bytes, content_type: str, *, status: int = 200, csp: str = "") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            if csp:
                self.send_header("Content-Security-Policy", csp)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, fmt, *args):
            pass  # the page polls itself every 3 seconds: its requests are not worth a line each

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


class _SmtpHandler:
    def __init__(self, messages: SinkMessages):
        self.messages = messages

    async def handle_DATA(self, server, session, envelope):
        item = self.messages.add(
            email_item(
                content=envelope.original_content or envelope.content,
                mail_from=envelope.mail_from,
                rcpt_tos=envelope.rcpt_tos,
            )
        )
        logger.info("Email to %s: %s", item["to"] or ", ".join(item["rcpt_to"]), item["subject"])
        return "250 Message accepted"


def sink_smtp_server(messages: SinkMessages, *, port: int) -> Controller:
    """The sink's SMTP side on 127.0.0.1:`port` (not started: `.start()` serves it from a thread of its own)."""
    # aiosmtpd logs each SMTP command at INFO; the sink's own line per email says what a developer looks for.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    # A fixed greeting name: the default is the machine's FQDN, whose lookup can take seconds.
    return Controller(
        _SmtpHandler(messages), hostname="127.0.0.1", port=port, server_hostname="localhost", enable_SMTPUTF8=True
    )
