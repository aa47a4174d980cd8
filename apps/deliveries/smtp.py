"""SMTP to a tenant's own server, with the destination checks every outbound connection gets.

The host is judged as the socket layer reads it (apps.core.destinations.host_check: an IP literal in any
spelling, by the address it is), its name is resolved when connecting, and the connection is made to a
resolved address that is not private or reserved (unless ROWBELL_OUTBOUND_ALLOW opens it); TLS still
verifies the certificate against the name. The server's replies from an internal address are not quoted
(outbound.answers_shown): smtplib puts them in its errors, which tenants read.
"""

from __future__ import annotations

import smtplib
import socket

from django.core.mail.backends.smtp import EmailBackend

from apps.core import destinations

from .outbound import WITHHELD, DestinationRefused, answers_shown


def _checked_connection(host: str, port: int, timeout, source_address) -> tuple[socket.socket, bool]:
    """A socket to a judged address of `host`, and whether that address is internal."""
    try:
        destinations.host_check(host, policy=destinations.OUTBOUND)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(f"Cannot resolve {host}: {exc.strerror}") from exc
        allowed = destinations.resolved_check(host, [info[4][0] for info in infos], policy=destinations.OUTBOUND)
    except destinations.DestinationRefused as exc:
        raise DestinationRefused(exc.message) from None
    last: OSError | None = None
    for address in allowed:
        try:
            sock = socket.create_connection((address, port), timeout, source_address)
        except OSError as exc:
            last = exc
            continue
        return sock, destinations.OUTBOUND.internal(address)
    raise last


class _Guarded:
    """What both SMTP classes add: the checked connection, and an internal server's words withheld."""

    _internal = False

    def _checked_socket(self, host, port, timeout):
        sock, self._internal = _checked_connection(host, port, timeout, self.source_address)
        return sock

    def getreply(self):
        code, message = super().getreply()
        if not answers_shown(self._internal):
            message = WITHHELD.encode()
        return code, message


class _GuardedSMTP(_Guarded, smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        return self._checked_socket(host, port, timeout)


class _GuardedSMTPSSL(_Guarded, smtplib.SMTP_SSL):
    def _get_socket(self, host, port, timeout):
        return self.context.wrap_socket(self._checked_socket(host, port, timeout), server_hostname=self._host)


class GuardedSmtpBackend(EmailBackend):
    @property
    def connection_class(self):
        return _GuardedSMTPSSL if self.use_ssl else _GuardedSMTP
