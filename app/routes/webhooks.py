"""The webhook signing secret of the caller's API key (receivers verify X-GCN-Signature with it)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from service.webhooks import load_secret, signing_key

from ..deps import ServicesDep
from ..problems import responses
from ..security import PrincipalDep

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class WebhookSecretOut(BaseModel):
    secret: str = Field(description="HMAC-SHA256 key of X-GCN-Signature for this API key's jobs' webhooks.")
    scope: str = Field(description="'api-key': this key's own secret; 'server': the server's (keys are off).")


@router.get("/secret", response_model=WebhookSecretOut, responses=responses(401))
def webhook_secret(services: ServicesDep, principal: PrincipalDep, response: Response) -> WebhookSecretOut:
    """The key that signs the webhooks of jobs made with this request's API key. Every API key
    has its own (derived from the server's secret), so one key's receivers cannot forge another
    key's webhooks; with keys off (one user), it is the server's secret."""
    response.headers["Cache-Control"] = "no-store"
    key = signing_key(load_secret(services.settings), principal.key_id)
    return WebhookSecretOut(secret=key.decode(), scope="server" if principal.key_id is None else "api-key")
