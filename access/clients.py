"""Registered API clients (SMART Backend Services, `private_key_jwt`): the registry in the
database and the client model the authorization server works with."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from authlib.oauth2.rfc6749 import ClientMixin

from access import scopes as smart_scopes
from access.config import is_loopback
from access.keys import check_backend_keys, check_public_jwks
from access.tables import clients, tokens
from referrals.errors import RefloopError
from referrals.store.database import Database

AUTH_METHOD = "private_key_jwt"
GRANT_TYPE = "client_credentials"


class ClientError(RefloopError):
    """A client registration that cannot be made; the message says what to change."""


@dataclass(frozen=True)
class Client(ClientMixin):
    client_id: str
    name: str
    scopes: tuple[str, ...]
    jwks_url: str | None
    jwks: dict[str, Any] | None
    tenant: str | None
    created_at: datetime

    # -- authlib's ClientMixin -------------------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return ""

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scopes this client registered for; None (invalid_scope) when the
        request names none (SMART requires a scope) or none of them is allowed."""
        granted = smart_scopes.allowed(smart_scopes.split(scope), self.scopes)
        return " ".join(granted) or None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == AUTH_METHOD and endpoint == "token"

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == GRANT_TYPE

    def to_dict(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "name": self.name, "scopes": list(self.scopes),
                "jwks_url": self.jwks_url, "jwks_kids": [k.get("kid") for k in
                                                         (self.jwks or {}).get("keys", [])],
                "tenant": self.tenant, "created_at": self.created_at.isoformat()}


class ClientRegistry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, *, name: str, scopes: list[str], jwks_url: str | None = None,
            jwks: Any = None, tenant: str | None = None) -> Client:
        """Register a client; raises ClientError for a bad name, scope or key source."""
        name = name.strip()
        if not name or len(name) > 128:
            raise ClientError("--name must be 1 to 128 characters")
        if bool(jwks_url) == (jwks is not None):
            raise ClientError("give exactly one of --jwks-url (preferred) or --jwks-file")
        if jwks_url:
            _check_jwks_url(jwks_url)
        if jwks is not None:
            jwks = check_backend_keys(check_public_jwks(jwks))
        wanted = smart_scopes.split(scopes)
        if not wanted:
            raise ClientError("give at least one --scope, e.g. --scope system/Task.rs")
        for scope in wanted:
            try:
                smart_scopes.check_scope(scope)
            except smart_scopes.ScopeError as exc:
                raise ClientError(str(exc)) from exc
            resource = smart_scopes.parse_resource_scope(scope)
            if resource is not None and resource.context != "system":
                raise ClientError(f"{scope}: a backend client gets system/ scopes; user/ and "
                                  "patient/ tokens come from the EHR's authorization server "
                                  "([[access.tenants]] issuer)")
        client = Client(client_id=uuid.uuid4().hex, name=name, scopes=tuple(wanted),
                        jwks_url=jwks_url or None, jwks=jwks, tenant=tenant,
                        created_at=datetime.now(UTC))
        with self.db.write() as c:
            taken = c.execute(sa.select(clients.c.client_id).where(
                clients.c.name == name, clients.c.removed_at.is_(None))).first()
            if taken is not None:
                raise ClientError(f"a client named {name!r} exists ({taken[0]}); remove it "
                                  "first or choose another name")
            c.execute(clients.insert().values(
                client_id=client.client_id, name=name, scopes=" ".join(wanted),
                jwks_url=client.jwks_url, jwks=jwks, tenant=tenant,
                created_at=client.created_at))
        return client

    def get(self, client_id: str) -> Client | None:
        """The active client `client_id`, or None (unknown or removed)."""
        with self.db.read() as c:
            row = c.execute(sa.select(clients).where(
                clients.c.client_id == client_id, clients.c.removed_at.is_(None))
            ).mappings().first()
        return _client(row) if row else None

    def list(self) -> list[Client]:
        with self.db.read() as c:
            rows = c.execute(sa.select(clients).where(clients.c.removed_at.is_(None))
                             .order_by(clients.c.created_at)).mappings().all()
        return [_client(r) for r in rows]

    def find(self, name_or_id: str) -> Client | None:
        return self.get(name_or_id) or next((c for c in self.list() if c.name == name_or_id),
                                            None)

    def remove(self, client_id: str) -> bool:
        """Remove the client and revoke its tokens at once; False when it was not active."""
        with self.db.write() as c:
            done = c.execute(clients.update().where(
                clients.c.client_id == client_id, clients.c.removed_at.is_(None)
            ).values(removed_at=datetime.now(UTC))).rowcount
            c.execute(tokens.delete().where(tokens.c.client_id == client_id))
        return bool(done)


def _check_jwks_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.netloc:
        return
    if parts.scheme == "http" and is_loopback(parts.hostname or ""):
        return
    raise ClientError(f"--jwks-url {url!r} must be an https URL (plain http only on the "
                      "loopback interface)")


def _client(row: Any) -> Client:
    created = row["created_at"]
    return Client(client_id=row["client_id"], name=row["name"],
                  scopes=tuple(row["scopes"].split()), jwks_url=row["jwks_url"],
                  jwks=row["jwks"], tenant=row["tenant"],
                  created_at=created if created.tzinfo else created.replace(tzinfo=UTC))
