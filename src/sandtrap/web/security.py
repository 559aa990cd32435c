"""The console's guard: the token check, the Host check against DNS rebinding, and the headers
that keep attacker text inert in the browser (a strict Content-Security-Policy among them).

The decisions are pure functions; `Guard` is the thin ASGI middleware applying them to every
request, static files included. Read-only is enforced here too: only GET and HEAD pass.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No inline script or style anywhere; the player's terminal emulator is WebAssembly (hence
# 'wasm-unsafe-eval', which allows compiling wasm and nothing else); nothing from elsewhere.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
REALM = 'Basic realm="SandTrap console", charset="UTF-8"'


def host_name(host_header: str) -> str:
    """The name part of a Host header (`[::1]:8080` -> `::1`, `a.example:80` -> `a.example`)."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def is_allowed_host(host_header: str, token_set: bool, allowed: Iterable[str]) -> bool:
    """Without a token only loopback names (and `allowed`) are served, so a page that rebinds its
    own name to 127.0.0.1 cannot read the console; with a token, `allowed` limits when given."""
    name = host_name(host_header)
    extra = {entry.lower() for entry in allowed}
    if name in extra:
        return True
    if token_set and not extra:
        return bool(name)
    return name in LOOPBACK_NAMES or name.startswith("127.")


def is_authorized(authorization: str | None, token: str | None) -> bool:
    """`Bearer <token>` or HTTP Basic with any user and the token as password; no token: open."""
    if token is None:
        return True
    if not authorization:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    offered: str | None = None
    if scheme.lower() == "bearer":
        offered = value.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        offered = decoded.partition(":")[2]
    if offered is None:
        return False
    return hmac.compare_digest(offered.encode("utf-8"), token.encode("utf-8"))


class Guard:
    """ASGI middleware: method, Host and token checks, then the security headers on every answer."""

    def __init__(self, app: ASGIApp, token: str | None, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = tuple(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal: PlainTextResponse | None = None
        if scope["method"] not in ("GET", "HEAD"):
            refusal = PlainTextResponse("read-only console\n", 405, {"allow": "GET, HEAD"})
        elif not is_allowed_host(
            headers.get("host", ""), self.token is not None, self.allowed_hosts
        ):
            refusal = PlainTextResponse("unknown host name (web.allowed_hosts)\n", 421)
        elif not is_authorized(headers.get("authorization"), self.token):
            refusal = PlainTextResponse("token required\n", 401, {"www-authenticate": REALM})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    out[name] = value
                if not scope["path"].startswith("/static/"):
                    out["cache-control"] = "no-store"
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
