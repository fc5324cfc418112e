"""Tables of the authorization server: registered clients, the tokens issued to them (hashes
only) and the client-assertion ids already used (replay protection)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

Moment = sa.DateTime(timezone=True)

clients = sa.Table(
    "access_clients", metadata,
    sa.Column("client_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),  # space-separated, as registered
    sa.Column("jwks_url", sa.String(1024)),
    sa.Column("jwks", sa.JSON),  # the public keys, when registered from a file
    sa.Column("tenant", sa.String(128)),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("removed_at", Moment),
)
sa.Index("ix_access_clients_name", clients.c.name)

tokens = sa.Table(
    "access_tokens", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),  # SHA-256 of the access token
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("issued_at", Moment, nullable=False),
    sa.Column("expires_at", Moment, nullable=False),
)
sa.Index("ix_access_tokens_expires", tokens.c.expires_at)
sa.Index("ix_access_tokens_client", tokens.c.client_id)

assertions = sa.Table(
    "access_assertions", metadata,
    sa.Column("client_id", sa.String(64), primary_key=True),
    sa.Column("jti_hash", sa.String(64), primary_key=True),
    sa.Column("expires_at", Moment, nullable=False),
)
sa.Index("ix_access_assertions_expires", assertions.c.expires_at)
