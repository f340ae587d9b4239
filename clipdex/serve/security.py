"""Request guards of `clipdex serve`: the Host check, the token, and the upload size cap.

One pure ASGI middleware, so every request meets them before routing, static files included.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Iterable
from http.cookies import SimpleCookie

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
COOKIE = "clipdex_session"
UPLOAD_PATHS = frozenset({"/api/search"})
MULTIPART_SLACK = 64 * 1024  # form framing and the small fields around the file


class UploadTooLarge(Exception):
    """The request body passed the upload cap; raised while it streams in."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name part of a Host header: ``[::1]:8765`` -> ``::1``, ``Example.org.:80`` -> ``example.org``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.rstrip(".")


class HostPolicy:
    """Which Host headers are served (DNS-rebinding protection, as local dev servers do).

    Bound to loopback: only loopback names. Bound elsewhere: the bound address, loopback names and
    ``--allow-host`` names; bound to a wildcard (0.0.0.0, ::) also any IP literal, which a rebinding
    attack (it needs a DNS name of its own) cannot use.
    """

    def __init__(self, bind_host: str, allow_hosts: Iterable[str] = ()):
        self.names = set(LOOPBACK_NAMES)
        bound = host_name(bind_host) if not _is_ip(bind_host) else bind_host.lower()
        if not is_loopback(bind_host):
            self.names |= {bound} | {host_name(h) for h in allow_hosts}
        self.any_ip = bound in ("0.0.0.0", "::", "")

    def allows(self, header: str | None) -> bool:
        if not header:
            return False
        name = host_name(header)
        return name in self.names or (self.any_ip and _is_ip(name))


class TokenAuth:
    """No token: everything is open. With one: ``Authorization: Bearer TOKEN`` or the session cookie
    that ``POST /api/login`` sets (an HMAC of the token, so the token itself is not in the cookie)."""

    def __init__(self, token: str | None):
        self.token = token or None
        self.session = (
            hmac.new(self.token.encode(), b"clipdex-session", hashlib.sha256).hexdigest()
            if self.token
            else ""
        )

    def token_ok(self, given: str) -> bool:
        return self.token is None or hmac.compare_digest(given.encode(), self.token.encode())

    def allows(self, headers: dict[bytes, bytes]) -> bool:
        if self.token is None:
            return True
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth[:7].lower() == "bearer " and self.token_ok(auth[7:].strip()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:  # a malformed Cookie header is simply no session
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self.session.encode())


class Guard:
    """ASGI middleware: Host check (421), token on /api (401), upload cap (413)."""

    def __init__(self, app, hosts: HostPolicy, auth: TokenAuth, max_upload_bytes: int):
        self.app = app
        self.hosts = hosts
        self.auth = auth
        self.max_body = max_upload_bytes + MULTIPART_SLACK

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        path = scope["path"]
        if not self.hosts.allows(headers.get(b"host", b"").decode("latin-1")):
            return await _error(send, 421, "this server does not answer for that Host name")
        if path.startswith("/api/") and path != "/api/login" and not self.auth.allows(headers):
            return await _error(send, 401, "missing or wrong token", {"www-authenticate": "Bearer"})
        if path in UPLOAD_PATHS and scope["method"] == "POST":
            try:
                length = int(headers.get(b"content-length", b"0"))
            except ValueError:
                return await _error(send, 400, "bad Content-Length")
            if length > self.max_body:  # refused before a byte of the body is read
                return await _error(send, 413, "upload too large", close=True)
            receive = self._capped(receive)
        try:
            await self.app(scope, receive, send)
        except UploadTooLarge:  # raised mid-stream, before any response was sent
            await _error(send, 413, "upload too large", close=True)

    def _capped(self, receive):
        seen = 0

        async def capped():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise UploadTooLarge
            return message

        return capped


async def _error(send, status: int, message: str, extra: dict | None = None, close: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
