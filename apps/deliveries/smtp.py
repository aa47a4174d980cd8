"""SMTP to a tenant's own server, with the destination checks every outbound connection gets.

The server's name is resolved when connecting, and the connection is made to a resolved address that
is not private or reserved (unless ROWBELL_OUTBOUND_ALLOW opens it); TLS still verifies the certificate
against the name.
"""

from __future__ import annotations

import smtplib
import socket

from django.core.mail.backends.smtp import EmailBackend

from .outbound import DestinationRefused, address_allowed


def _checked_connection(host: str, port: int, timeout, source_address):
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"Cannot resolve {host}: {exc.strerror}") from exc
    addresses = [info[4][0] for info in infos]
    allowed = [a for a in addresses if address_allowed(a)]
    if not allowed:
        raise DestinationRefused(f"{host} resolves to a private or reserved address ({addresses[0]}).")
    last: OSError | None = None
    for address in allowed:
        try:
            return socket.create_connection((address, port), timeout, source_address)
        except OSError as exc:
            last = exc
    raise last


class _GuardedSMTP(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        return _checked_connection(host, port, timeout, self.source_address)


class _GuardedSMTPSSL(smtplib.SMTP_SSL):
    def _get_socket(self, host, port, timeout):
        sock = _checked_connection(host, port, timeout, self.source_address)
        return self.context.wrap_socket(sock, server_hostname=self._host)


class GuardedSmtpBackend(EmailBackend):
    @property
    def connection_class(self):
        return _GuardedSMTPSSL if self.use_ssl else _GuardedSMTP
