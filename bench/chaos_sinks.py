"""The webhook receiver and the SMTP sink of bench/chaos.py, in one asyncio process that records every message
it is handed, with its message id and what it answered, and misbehaves on demand.

    python bench/chaos_sinks.py --http-port N --smtp-port M [--secret whsec_...] [--slow SECONDS]

HTTP:
- `POST /hook`: a webhook. Its `webhook-id`, the message's key (the body's `data.workflow` and its row id,
  `data.event.ids[0]`, or its recipient's id) and what was answered are recorded. The answer depends on the
  webhook mode: `ok` (200), `500`, `timeout` (the request is read, then nothing is answered for `--slow`
  seconds, longer than the sender's timeout) or `reset` (the request is read, then the connection is reset).
  With `--secret`, each signature is checked (Standard Webhooks) and counted valid or invalid.
- `GET /mode?webhook=ok|500|timeout|reset&smtp=ok|451`: sets the modes.
- `GET /dump?since=N`: every record from the N-th on, as JSON: [kind, time, message id, key, answer].
- `GET /stats`: counts.

SMTP (aiosmtpd): each message's `X-Rowbell-Message-Id` header and recipient are recorded; the answer is 250,
or `451 4.3.0` (try again later) in mode `451`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email
import hashlib
import hmac
import json
import socket
import struct
import time
from urllib.parse import parse_qs, urlsplit

RECORDS: list = []  # [kind, time, message id, key, answer]
MODES = {"webhook": "ok", "smtp": "ok"}
COUNTS = {"valid": 0, "invalid": 0}
KEY: bytes | None = None
SLOW = 5.0


def _answer(status: str, body: bytes = b"ok") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s" % (
        status.encode(),
        len(body),
        body,
    )


def _webhook_key(body: bytes) -> str:
    try:
        data = json.loads(body)["data"]
        event = data.get("event")
        if event:
            return f"{data['workflow']}:{event['ids'][0]}"
        return f"{data['workflow']}:{data['recipient']['id']}"
    except (ValueError, KeyError, IndexError, TypeError):
        return "unparsable"


def _verify(headers: dict, body: bytes) -> None:
    if KEY is None:
        return
    signed = f"{headers.get('webhook-id', '')}.{headers.get('webhook-timestamp', '')}.".encode() + body
    expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    given = [s.partition(",")[2] for s in headers.get("webhook-signature", "").split()]
    COUNTS["valid" if any(hmac.compare_digest(expected, s) for s in given) else "invalid"] += 1


async def http_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", 0) or 0))
            url = urlsplit(target)
            if method == "POST" and url.path == "/hook":
                mode = MODES["webhook"]
                RECORDS.append(["webhook", time.time(), headers.get("webhook-id", ""), _webhook_key(body), mode])
                _verify(headers, body)
                if mode == "ok":
                    RECORDS[-1][4] = 200
                    writer.write(_answer("200 OK"))
                elif mode == "500":
                    RECORDS[-1][4] = 500
                    writer.write(_answer("500 Internal Server Error", b"chaos"))
                elif mode == "timeout":
                    await asyncio.sleep(SLOW)
                    writer.write(_answer("200 OK"))  # too late: the sender has given up on this attempt
                else:  # reset: the request was read; the connection is reset instead of an answer
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
            elif url.path == "/mode":
                for name, values in parse_qs(url.query).items():
                    MODES[name] = values[-1]
                writer.write(_answer("200 OK", json.dumps(MODES).encode()))
            elif url.path == "/dump":
                since = int(parse_qs(url.query).get("since", ["0"])[0])
                writer.write(_answer("200 OK", json.dumps(RECORDS[since:]).encode()))
            elif url.path == "/stats":
                stats = {"records": len(RECORDS), "modes": MODES, **COUNTS}
                writer.write(_answer("200 OK", json.dumps(stats).encode()))
            else:
                writer.write(_answer("404 Not Found", b"no"))
            await writer.drain()
    except (ConnectionError, OSError):
        return
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - already gone
            pass


class SmtpHandler:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content or envelope.content)
        mode = MODES["smtp"]
        for to in envelope.rcpt_tos:
            RECORDS.append(
                [
                    "email",
                    time.time(),
                    message.get("X-Rowbell-Message-Id", ""),
                    f"mail:{to}",
                    451 if mode == "451" else 250,
                ]
            )
        if mode == "451":
            return "451 4.3.0 Chaos: try again later"
        return "250 OK"


async def main(http_port: int, smtp_port: int) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    http = await asyncio.start_server(http_client, "127.0.0.1", http_port, backlog=1024, limit=1 << 20)
    handler = SmtpHandler()
    smtp = await loop.create_server(
        lambda: SMTP(handler, hostname="chaos-sink", data_size_limit=10 << 20), "127.0.0.1", smtp_port, backlog=256
    )
    print(f"sinks listening: http {http_port}, smtp {smtp_port}", flush=True)
    async with http, smtp:
        await asyncio.gather(http.serve_forever(), smtp.serve_forever())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--secret", default=None)
    parser.add_argument("--slow", type=float, default=5.0, help="seconds a 'timeout' answer waits")
    args = parser.parse_args()
    if args.secret:
        KEY = base64.b64decode(args.secret.removeprefix("whsec_"))
    SLOW = args.slow
    asyncio.run(main(args.http_port, args.smtp_port))
