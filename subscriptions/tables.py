"""Tables of the subscriptions adapter (created by migration 0002_subscriptions;
secrets hashed by 0150_subscriptions_secret_hash)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

Moment = sa.DateTime(timezone=True)

#: One row per hook: an endpoint path of ours, the hash of the secret its sender must present
#: (the secret itself is never stored), and (for
#: referral intake and other consumers) the Subscription on the server that delivers to it.
registrations = sa.Table(
    "subscription_registrations", metadata,
    sa.Column("hook_id", sa.String(64), primary_key=True),
    sa.Column("server", sa.String(512), nullable=False),
    sa.Column("purpose", sa.String(64), nullable=False),
    sa.Column("deliver_kind", sa.String(128), nullable=False),
    sa.Column("secret_hash", sa.String(80), nullable=False, server_default=""),
    sa.Column("previous_secret_hash", sa.String(80)),  # still accepted until ...
    sa.Column("previous_secret_until", Moment),       # ... the end of a rotation's grace
    sa.Column("subscription_id", sa.String(128)),
    sa.Column("flavour", sa.String(32), nullable=False, server_default=""),
    sa.Column("criteria", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False, server_default="new"),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("updated_at", Moment, nullable=False),
    sa.Column("last_notification_at", Moment),
    sa.Column("last_notification_type", sa.String(32)),
    sa.Column("last_event_number", sa.String(32)),
    sa.Column("notifications", sa.Integer, nullable=False, server_default="0"),
    sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
)
sa.Index("ix_subscription_registrations_server", registrations.c.server, registrations.c.purpose)

#: The last version of each EHR resource we turned into referral state (dedupe across
#: redeliveries, overlapping polls and out-of-order notifications).
processed = sa.Table(
    "subscription_processed", metadata,
    sa.Column("server", sa.String(512), primary_key=True),
    sa.Column("resource_type", sa.String(64), primary_key=True),
    sa.Column("resource_id", sa.String(128), primary_key=True),
    sa.Column("version", sa.String(64), nullable=False, server_default=""),
    sa.Column("last_updated", sa.String(64), nullable=False, server_default=""),
    sa.Column("processed_at", Moment, nullable=False),
)

TABLES = [registrations, processed]
