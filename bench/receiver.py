"""A minimal asyncio HTTP receiver for the benchmarks: answers every POST with 200 on keep-alive
connections and counts them. One process, one event loop.

    python bench/receiver.py --port 8055 [--secret whsec_...]

`GET /count` returns the number of webhooks received; `GET /stats` returns JSON: `count`, `distinct`
(webhook-ids seen), `valid` and `invalid` (Standard Webhooks signatures checked with `--secret`, HMAC-SHA256
over "{webhook-id}.{webhook-timestamp}.{body}"; both 0 without it) and `plain` (POSTs of the plain
reference loop, marked by an `x-bench-plain` header, counted apart) and `last_at` (Unix time of the last
webhook).
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import time

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Receiver(asyncio.Protocol):
    count = 0
    plain = 0
    valid = 0
    invalid = 0
    last_at = 0.0
    ids: set = set()
    key: bytes | None = None

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            headers = {}
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", 0))
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4 : head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length :]
            if head.startswith("GET /count"):
                self._answer(str(Receiver.count).encode())
            elif head.startswith("GET /stats"):
                self._answer(
                    json.dumps(
                        {
                            "count": Receiver.count,
                            "distinct": len(Receiver.ids),
                            "valid": Receiver.valid,
                            "invalid": Receiver.invalid,
                            "plain": Receiver.plain,
                            "last_at": Receiver.last_at,
                        }
                    ).encode()
                )
            elif "x-bench-plain" in headers:
                Receiver.plain += 1
                self.transport.write(OK)
            else:
                Receiver.count += 1
                Receiver.last_at = time.time()
                message_id = headers.get("webhook-id", "")
                Receiver.ids.add(message_id)
                if Receiver.key is not None:
                    signed = f"{message_id}.{headers.get('webhook-timestamp', '')}.".encode() + body
                    expected = base64.b64encode(hmac.new(Receiver.key, signed, hashlib.sha256).digest()).decode()
                    given = [s.partition(",")[2] for s in headers.get("webhook-signature", "").split()]
                    if any(hmac.compare_digest(expected, s) for s in given):
                        Receiver.valid += 1
                    else:
                        Receiver.invalid += 1
                self.transport.write(OK)

    def _answer(self, body: bytes):
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


async def main(port: int):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Receiver, "127.0.0.1", port, backlog=1024)
    print(f"receiver listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8055)
    parser.add_argument("--secret", default=None, help="whsec_... : verify each webhook's signature")
    args = parser.parse_args()
    if args.secret:
        Receiver.key = base64.b64decode(args.secret.removeprefix("whsec_"))
    asyncio.run(main(args.port))
