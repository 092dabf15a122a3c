"""Optional admin endpoints: promote and roll back through the registry over HTTP.

Off by default. ``pruneguard serve --admin-token-env VAR`` turns them on with the token
held in ``$VAR``; each call needs ``Authorization: Bearer <token>`` and is recorded in the
registry history with the actor ``admin-api``. After a move the replica that took the call
swaps at once; the others follow within their poll interval.
"""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pruneguard.registry.errors import NotFound, PruneguardError

if TYPE_CHECKING:
    from pruneguard.deploy.runtime import Replica

__all__ = ["ACTOR", "AdminAPI", "AdminDenied", "AdminDisabled"]

ACTOR = "admin-api"


class AdminDisabled(NotFound):
    """The admin endpoints are off (answered 404)."""


class AdminDenied(PruneguardError, PermissionError):
    """Missing or wrong bearer token (answered 401)."""


class AdminAPI:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._token = replica.config.admin_token

    def authorize(self, header: str | None) -> None:
        if not self._token:
            raise AdminDisabled(
                "the admin endpoints are off; start the service with "
                "`pruneguard serve NAME --admin-token-env VAR` to enable them"
            )
        scheme, _, presented = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), self._token.encode()
        ):
            raise AdminDenied("send the admin token as `Authorization: Bearer <token>`")

    def promote(self, tag: str, reason: str = "", shadow_previous: bool = False) -> dict[str, Any]:
        registry: Any = self.replica.registry
        event = registry.promote(tag, actor=ACTOR, reason=reason, shadow_previous=shadow_previous)
        return self._after(event)

    def rollback(self, reason: str = "", to: str | None = None) -> dict[str, Any]:
        registry: Any = self.replica.registry
        event = registry.rollback(self.replica.config.model, actor=ACTOR, reason=reason, to=to)
        return self._after(event)

    def _after(self, event: Any) -> dict[str, Any]:
        self.replica.swapper.refresh()
        return {"event": asdict(event), "status": self.replica.status()}
