"""Who is asking: API keys (``Authorization: Bearer``), checked before a request body is read.

``AuthMiddleware`` guards every ``/v1`` route except the public preset catalogue: with keys
required, a request without a valid, unrevoked key is answered 401 (problem+json with
``WWW-Authenticate: Bearer``) before its body is read, so an unauthenticated upload costs
nothing. The principal it finds is left in ``request.state.principal``; routes get it through
``PrincipalDep`` (which also documents the bearer scheme in the OpenAPI document). With keys off
the principal is ``ANONYMOUS``: one user who sees everything (a laptop's ``gcn serve``).
"""

from __future__ import annotations

from typing import Annotated, Optional

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


class AuthMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyStore, required: bool):
        self.app = app
        self.keys = keys
        self.required = required

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
            try:
                principal = await anyio.to_thread.run_sync(self.keys.authenticate, token)
            except Exception:
                response = problems.problem_response(503, problems.TITLES[503], "cannot check API keys now",
                                                     "/problems/unavailable", headers={"Retry-After": "5"})
                await response(scope, receive, send)
                return
            if principal is None:
                await unauthorized("this API key is not valid (unknown or revoked)", invalid=True)(scope, receive, send)
                return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def get_principal(request: Request,
                        _credentials: Annotated[Optional[HTTPAuthorizationCredentials], Security(bearer)] = None) -> Principal:
    return getattr(request.state, "principal", None) or ANONYMOUS


PrincipalDep = Annotated[Principal, Depends(get_principal)]
