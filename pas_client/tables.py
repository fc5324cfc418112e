"""The PAS tables (SQLAlchemy Core; created by migration 0004_pas)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Instant = sa.DateTime(timezone=True)

#: one prior-authorization request as sent (original, update or cancel)
pas_requests = sa.Table(
    "pas_requests", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("payer", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # submit | update | cancel
    sa.Column("chain_id", sa.String(64), nullable=False, index=True),  # the first request's id
    sa.Column("prior_id", sa.String(64), nullable=True),  # the immediately prior request
    sa.Column("version_no", sa.Integer, nullable=False),
    sa.Column("bundle_identifier", sa.String(200), nullable=False, unique=True),
    sa.Column("claim_identifier", sa.String(200), nullable=False, index=True),
    sa.Column("claim_full_url", sa.String(200), nullable=False, index=True),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("decision", JSONType, nullable=True),  # items as read from reviewAction
    sa.Column("auth_number", sa.String(100), nullable=False, server_default=""),
    sa.Column("decided_at", sa.String(40), nullable=False, server_default=""),  # response created
    sa.Column("bundle", sa.LargeBinary, nullable=False),  # exact bytes sent; a retry resends them
    sa.Column("findings", JSONType, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", Instant, nullable=False),
    sa.Column("updated_at", Instant, nullable=False),
)

#: every response received for a request ($submit reply, notification, $inquire)
pas_responses = sa.Table(
    "pas_responses", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), sa.ForeignKey("pas_requests.id"), nullable=False,
              index=True),
    sa.Column("source", sa.String(16), nullable=False),  # submit | notification | inquire | http
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("http_status", sa.Integer, nullable=True),
    sa.Column("overall", sa.String(24), nullable=False),
    sa.Column("body", JSONType, nullable=False),
    sa.Column("received_at", Instant, nullable=False),
    sa.UniqueConstraint("request_id", "digest", name="uq_pas_responses_request_digest"),
)

#: the organisation-level Subscription we hold at each payer
pas_subscriptions = sa.Table(
    "pas_subscriptions", metadata,
    sa.Column("payer", sa.String(200), primary_key=True),
    sa.Column("subscription_id", sa.String(200), nullable=False),
    sa.Column("hook_id", sa.String(200), nullable=False),
    sa.Column("created_at", Instant, nullable=False),
)

TABLES = [pas_requests, pas_responses, pas_subscriptions]
