"""Tables of the SMART app: pending launches (OAuth state) and server-side sessions.

Only hashes of the browser cookie and of `state` are stored; tokens are encrypted (tokens.py).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

Moment = sa.DateTime(timezone=True)

launch_states = sa.Table(
    "smart_launch_states", metadata,
    sa.Column("state_hash", sa.String(64), primary_key=True),
    sa.Column("browser_hash", sa.String(64), nullable=False),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("iss", sa.String(512), nullable=False),
    sa.Column("launch", sa.Text),
    sa.Column("secrets", sa.Text, nullable=False),  # encrypted: code_verifier, nonce
    sa.Column("redirect_uri", sa.String(512), nullable=False),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("used_at", Moment),
    # hash of the address the launch came from: the per-source limit counts these
    sa.Column("source", sa.String(64), nullable=False, server_default=""),
)
sa.Index("ix_smart_launch_states_created", launch_states.c.created_at)
sa.Index("ix_smart_launch_states_source", launch_states.c.source, launch_states.c.created_at)

sessions = sa.Table(
    "smart_sessions", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("browser_hash", sa.String(64), nullable=False),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("iss", sa.String(512), nullable=False),
    sa.Column("user_ref", sa.String(256), nullable=False),
    sa.Column("context", sa.JSON, nullable=False),  # patient, encounter, fhirContext, scope...
    sa.Column("tokens", sa.Text, nullable=False),  # encrypted token response
    sa.Column("token_expires_at", Moment),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("last_seen", Moment, nullable=False),
    sa.Column("expires_at", Moment, nullable=False),
)
sa.Index("ix_smart_sessions_browser", sessions.c.browser_hash)
sa.Index("ix_smart_sessions_last_seen", sessions.c.last_seen)
