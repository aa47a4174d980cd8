"""SMTP to a tenant's own server, with the destination checks every outbound connection gets.

The host is judged as the socket layer reads it (apps.core.destinations.host_check: an IP literal in any
spelling, by the address it is), its name is resolved when connecting, and the connection is made to a
resolved address that is not private or reserved (unless ROWBELL_OUTBOUND_ALLOW opens it); TLS still
verifies the certificate against the name. The server's replies from an internal address are not quoted
(outbound.answers_shown): smtplib puts them in its errors, which tenants read.
"""

from __future__ import annotations

import functools
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
        addresses = [info[4][0] for info in infos if isinstance(info[4][0], str)]  # IPv4 and IPv6: text
        allowed = destinations.resolved_check(host, addresses, policy=destinations.OUTBOUND)
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
    assert last is not None  # resolved_check returns at least one address
    raise last


class _Guarded:
    """What both SMTP classes add: the checked connection, reporting to the backend whether its address
    is internal."""

    def __init__(self, *args, backend: GuardedSmtpBackend, **kwargs):
        self._backend = backend  # before connecting: smtplib connects in its constructor
        super().__init__(*args, **kwargs)

    def _checked_socket(self, host, port, timeout):
        sock, self._backend.internal = _checked_connection(host, port, timeout, self.source_address)
        return sock


class _GuardedSMTP(_Guarded, smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        return self._checked_socket(host, port, timeout)


class _GuardedSMTPSSL(_Guarded, smtplib.SMTP_SSL):
    def _get_socket(self, host, port, timeout):
        return self.context.wrap_socket(self._checked_socket(host, port, timeout), server_hostname=self._host)


def _withheld(exc: smtplib.SMTPException) -> smtplib.SMTPException:
    """`exc` with the server's words replaced by WITHHELD; its reply codes stay (they say what happened)."""
    text = WITHHELD.encode()
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        exc.recipients = {to: (code, text) for to, (code, _) in exc.recipients.items()}
        exc.args = (exc.recipients,)
    elif isinstance(exc, smtplib.SMTPResponseException):
        exc.smtp_error = text
        exc.args = (exc.smtp_code, text, *exc.args[2:])
    return exc


class GuardedSmtpBackend(EmailBackend):
    """Django's SMTP backend on checked connections. An error from an internal server (one only
    ROWBELL_OUTBOUND_ALLOW opens) keeps its reply code and loses the server's text, unless
    ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS says so: a non-SMTP service's first line would arrive as an
    SMTP reply. The replies themselves are untouched (smtplib reads EHLO's extensions in them)."""

    internal = False

    @property
    def connection_class(self):
        return functools.partial(_GuardedSMTPSSL if self.use_ssl else _GuardedSMTP, backend=self)

    def open(self):
        try:
            return super().open()
        except smtplib.SMTPException as exc:
            raise self._shown(exc) from None

    def send_messages(self, email_messages):
        try:
            return super().send_messages(email_messages)
        except smtplib.SMTPException as exc:
            raise self._shown(exc) from None

    def _shown(self, exc: smtplib.SMTPException) -> smtplib.SMTPException:
        return exc if answers_shown(self.internal) else _withheld(exc)
