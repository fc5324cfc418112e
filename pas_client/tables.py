"""The PAS tables (SQLAlchemy Core; created by migrations 0004_pas, 0200_pas_replies,
0201_pas_coverage and 0240_pas_request_sender)."""

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
    # following an undecided request: the payer's decision deadline, the next $inquire, how
    # many were made, when the coordinator was called in
    sa.Column("deadline_at", Instant, nullable=True),
    sa.Column("next_check_at", Instant, nullable=True, index=True),
    sa.Column("checks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("escalated_at", Instant, nullable=True),
    # the work item sending it (its idempotency key), claimed before the HTTP call
    sa.Column("sender", sa.String(512), nullable=True),
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

#: every HTTP reply from a payer, raw, stored before it is interpreted
pas_replies = sa.Table(
    "pas_replies", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=True, index=True),
    sa.Column("referral_id", sa.String(64), nullable=True, index=True),
    sa.Column("payer", sa.String(200), nullable=False),
    # submit | inquire | read | subscription | eligibility | crd-discovery | crd
    sa.Column("operation", sa.String(24), nullable=False),
    sa.Column("http_status", sa.Integer, nullable=False),
    sa.Column("headers", JSONType, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # the bytes as received
    sa.Column("received_at", Instant, nullable=False),
    # what Refloop made of it: decision | rejected | uninterpretable | retry | ... ("" = not yet)
    sa.Column("interpretation", sa.String(24), nullable=False, server_default=""),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
)

#: per referral: does it need authorization (and who said so), and the eligibility answer
pas_coverage = sa.Table(
    "pas_coverage", metadata,
    sa.Column("referral_id", sa.String(64), primary_key=True),
    sa.Column("payer", sa.String(200), nullable=False),
    sa.Column("requirement", sa.String(16), nullable=False),  # required | not-required | unknown
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("detail", JSONType, nullable=False),       # CRD coverage information and cards
    sa.Column("eligibility", JSONType, nullable=True),   # what the payer answered, or why not
    sa.Column("checked_at", Instant, nullable=False),
)

TABLES = [pas_requests, pas_responses, pas_subscriptions, pas_replies, pas_coverage]
