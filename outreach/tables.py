"""The outreach tables (SQLAlchemy Core; created by migration 0510_outreach)."""

from __future__ import annotations

import sqlalchemy as sa

from referrals.store.schema import JSONType, Moment

metadata = sa.MetaData()
SerialId = sa.BigInteger().with_variant(sa.Integer, "sqlite")

#: one ladder run for a referral: the rungs of the ladder version it started on
outreach_plans = sa.Table(
    "outreach_plans", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(512), nullable=False, unique=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("patient", sa.String(256), nullable=False),
    sa.Column("ladder", sa.String(64), nullable=False),
    sa.Column("ladder_version", sa.Integer, nullable=False),
    sa.Column("rungs", JSONType, nullable=False),
    sa.Column("zone", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active | paused | stopped | finished
    sa.Column("stop_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("done", JSONType, nullable=False),  # {rung index: outcome}
    sa.Column("started_at", Moment, nullable=False),
    sa.Column("updated_at", Moment, nullable=False),
)

#: one message to a patient (or a reply from one): the outbox row written before the provider
#: call, keyed by the work item's idempotency key
outreach_messages = sa.Table(
    "outreach_messages", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(512), nullable=False, unique=True),
    sa.Column("direction", sa.String(8), nullable=False),  # out | in
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("patient", sa.String(256), nullable=False),
    sa.Column("plan_id", sa.String(64)),
    sa.Column("rung", sa.Integer),
    sa.Column("purpose", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("address", sa.String(320), nullable=False, server_default=""),
    sa.Column("language", sa.String(16), nullable=False, server_default=""),
    sa.Column("subject", sa.Text, nullable=False, server_default=""),
    sa.Column("body", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("provider_sid", sa.String(255), index=True),
    sa.Column("error_code", sa.String(16), nullable=False, server_default=""),
    sa.Column("rule", sa.String(32), nullable=False, server_default=""),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("reply_context", sa.Text, nullable=False, server_default=""),
    sa.Column("in_response_to", sa.String(64)),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("sent_at", Moment),
    sa.Column("updated_at", Moment, nullable=False),
)
sa.Index("ix_outreach_messages_address", outreach_messages.c.address,
         outreach_messages.c.created_at)
sa.Index("ix_outreach_messages_patient", outreach_messages.c.patient,
         outreach_messages.c.created_at)

#: every send, defer and skip with the rule that fired
outreach_decisions = sa.Table(
    "outreach_decisions", metadata,
    sa.Column("id", SerialId, primary_key=True, autoincrement=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("message_key", sa.String(512), nullable=False),
    sa.Column("purpose", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False, server_default=""),
    sa.Column("outcome", sa.String(8), nullable=False),
    sa.Column("rule", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("not_before", Moment),
    sa.Column("at", Moment, nullable=False),
)

#: consent events: opt-outs and opt-ins per patient and channel, and per address
outreach_consents = sa.Table(
    "outreach_consents", metadata,
    sa.Column("id", SerialId, primary_key=True, autoincrement=True),
    sa.Column("patient", sa.String(256), nullable=False, index=True),
    sa.Column("channel", sa.String(16), nullable=False),  # sms | voice | email | all
    sa.Column("address", sa.String(320), nullable=False, server_default="", index=True),
    sa.Column("kind", sa.String(8), nullable=False),  # opt-out | opt-in
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("text", sa.String(200), nullable=False, server_default=""),
    sa.Column("at", Moment, nullable=False),
)

#: contact points the provider refused (bad number, bounced address)
outreach_failing = sa.Table(
    "outreach_failing", metadata,
    sa.Column("address", sa.String(320), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("code", sa.String(16), nullable=False, server_default=""),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("since", Moment, nullable=False),
)

#: mail to a provider's office (outreach.provider-email, asked for by other adapters): the row
#: written before the SMTP call, keyed by the work item's idempotency key, so an interrupted
#: send is never repeated
outreach_provider_mail = sa.Table(
    "outreach_provider_mail", metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("referral_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("purpose", sa.String(64), nullable=False),
    sa.Column("address", sa.String(320), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # sending | sent | failed | unknown
    sa.Column("message_id", sa.String(255), nullable=False, server_default=""),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("updated_at", Moment, nullable=False),
)
sa.Index("ix_outreach_provider_mail_referral", outreach_provider_mail.c.referral_id)
