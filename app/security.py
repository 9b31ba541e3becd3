"""Who is asking: API keys (``Authorization: Bearer``), checked before a request body is read.

``AuthMiddleware`` guards every ``/v1`` route except the public preset catalogue: with keys
required, a request without a valid, unrevoked key is answered 401 (problem+json with
``WWW-Authenticate: Bearer``) before its body is read, so an unauthenticated upload costs
nothing. The principal it finds is left in ``request.state.principal``; routes get it through
``PrincipalDep`` (which also documents the bearer scheme in the OpenAPI document). With keys off
the principal is ``ANONYMOUS``: one user who sees everything (a laptop's ``gcn serve``).

Each invalid key costs a database lookup, so ``FailedAuthLimiter`` counts them per client
address (IPv6: per /64): past ``GCN_AUTH_FAILURE_LIMIT`` in a minute, that address's requests that
carry a key are answered 429 (with ``Retry-After``) without a lookup until the oldest failure is a
minute old. Lookups still in progress count too, so a burst of concurrent bad keys is held to the
limit rather than all looked up at once. Behind a reverse proxy every client has the proxy's
address: raise the limit there, or set 0. A request with no client address is not limited.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from typing import Annotated, Callable, Optional

import anyio
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import ANONYMOUS, KeyStore, Principal, bearer_token

from . import problems

PUBLIC_V1 = ("/v1/presets",)
REALM = 'Bearer realm="gcn"'

bearer = HTTPBearer(
    auto_error=False, scheme_name="ApiKey",
    description="An API key from `gcn keys create`, as `Authorization: Bearer <key>`. Required unless the "
                "server runs with GCN_AUTH=off or `gcn serve` on a loopback address.",
)


def guarded(path: str) -> bool:
    return (path == "/v1" or path.startswith("/v1/")) and not path.startswith(PUBLIC_V1)


def unauthorized(detail: str, invalid: bool):
    header = f'{REALM}, error="invalid_token"' if invalid else REALM
    return problems.problem_response(401, problems.TITLES[401], detail, "/problems/unauthorized",
                                     headers={"WWW-Authenticate": header})


def client_bucket(scope: Scope) -> Optional[str]:
    """Whom ``FailedAuthLimiter`` counts a request against: its client address, an IPv6 one by
    its /64 (one host can hold a whole /64); None when the server does not know it."""
    client = scope.get("client")
    if not client or not client[0]:
        return None
    host = client[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else host


class FailedAuthLimiter:
    """Invalid API keys per client address in a sliding ``window`` (seconds); ``limit`` 0: none.
    Lookups in progress (``begin``, then ``end``) count against the limit as well. Remembers at
    most ``max_addresses`` addresses (the least recently failing are forgotten). Used on the
    event loop's thread only, so it needs no lock."""

    def __init__(self, limit: int, window: float = 60.0, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.max_addresses, self.clock = limit, window, max_addresses, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._pending: dict[str, int] = {}

    def retry_after(self, address: str) -> Optional[int]:
        """Seconds until this address may try a key again, or None when it may now."""
        if not self.limit:
            return None
        times = self._failures.get(address)
        if times is not None:
            now = self.clock()
            while times and times[0] <= now - self.window:
                times.popleft()
            if not times:
                del self._failures[address]
                times = None
        failures = len(times) if times else 0
        if failures + self._pending.get(address, 0) < self.limit:
            return None
        if failures >= self.limit:
            return max(1, math.ceil(times[0] + self.window - self.clock()))
        return 1  # held back by lookups still in progress: they end within a second or so

    def begin(self, address: str) -> None:
        if self.limit:
            self._pending[address] = self._pending.get(address, 0) + 1

    def end(self, address: str, ok: bool) -> None:
        if not self.limit:
            return
        left = self._pending.get(address, 0) - 1
        if left > 0:
            self._pending[address] = left
        else:
            self._pending.pop(address, None)
        if not ok:
            self.failed(address)

    def failed(self, address: str) -> None:
        if not self.limit:
            return
        times = self._failures.pop(address, None) or deque(maxlen=self.limit)
        times.append(self.clock())
        self._failures[address] = times  # most recent last
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)


class AuthMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyStore, required: bool, limiter: Optional[FailedAuthLimiter] = None):
        self.app = app
        self.keys = keys
        self.required = required
        self.limiter = limiter or FailedAuthLimiter(0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not guarded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        principal: Optional[Principal] = ANONYMOUS
        if self.required:
            header = None
            for name, value in scope.get("headers") or []:
                if name == b"authorization":
                    header = value.decode("latin-1")
                    break
            token = bearer_token(header)
            if token is None:
                detail = ("an API key is required: send Authorization: Bearer <key>" if header is None
                          else "the Authorization header must be Bearer <key>")
                await unauthorized(detail, invalid=header is not None)(scope, receive, send)
                return
            address = client_bucket(scope)
            wait = self.limiter.retry_after(address) if address is not None else None
            if wait is not None:
                response = problems.problem_response(
                    429, problems.TITLES[429], f"too many requests with an invalid API key from this address; "
                    f"try again in {wait} s", "/problems/too-many-auth-failures", headers={"Retry-After": str(wait)})
                await response(scope, receive, send)
                return
            if address is not None:
                self.limiter.begin(address)
            bad_key = False  # a failed database or a cancelled request is not the key's fault
            try:
                principal = await anyio.to_thread.run_sync(self.keys.authenticate, token)
                bad_key = principal is None
            except Exception:
                response = problems.problem_response(503, problems.TITLES[503], "cannot check API keys now",
                                                     "/problems/unavailable", headers={"Retry-After": "5"})
                await response(scope, receive, send)
                return
            finally:  # always, or an address would stay held back by a lookup that never ends
                if address is not None:
                    self.limiter.end(address, ok=not bad_key)
            if principal is None:
                await unauthorized("this API key is not valid (unknown or revoked)", invalid=True)(scope, receive, send)
                return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def get_principal(request: Request,
                        _credentials: Annotated[Optional[HTTPAuthorizationCredentials], Security(bearer)] = None) -> Principal:
    return getattr(request.state, "principal", None) or ANONYMOUS


PrincipalDep = Annotated[Principal, Depends(get_principal)]
