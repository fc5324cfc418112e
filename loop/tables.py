"""The loop adapter's tables (SQLAlchemy Core; created by migration 0701_loop)."""

from __future__ import annotations

import sqlalchemy as sa

from referrals.store.schema import Moment

metadata = sa.MetaData()
SerialId = sa.BigInteger().with_variant(sa.Integer, "sqlite")

#: one chase of a referral's consult note (the ladder's state; its steps are work items)
chases = sa.Table(
    "loop_chases", metadata,
    sa.Column("referral_id", sa.String(64), primary_key=True),
    #: the event seq of the visit that started this round
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("specialist", sa.String(128), nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False),  # chasing | stopped | exhausted | abandoned
    sa.Column("visit_at", Moment, nullable=False),
    sa.Column("steps_done", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_step", sa.String(16), nullable=False, server_default=""),
    #: the Task we created on the specialist's FHIR endpoint (server base and id)
    sa.Column("task_server", sa.String(512), nullable=False, server_default=""),
    sa.Column("task_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("stopped_by", sa.String(64), nullable=False, server_default=""),
    sa.Column("started_at", Moment, nullable=False),
    sa.Column("updated_at", Moment, nullable=False),
)
sa.Index("ix_loop_chases_task", chases.c.task_server, chases.c.task_id)

#: secure links: a specialist's office uploads the note; a referrer reads it. Only the token's
#: SHA-256 is kept.
links = sa.Table(
    "loop_links", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("purpose", sa.String(16), nullable=False),  # upload | note
    sa.Column("document", sa.String(256), nullable=False, server_default=""),
    sa.Column("document_server", sa.String(512), nullable=False, server_default=""),
    sa.Column("recipient", sa.String(320), nullable=False, server_default=""),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("expires_at", Moment, nullable=False),
    sa.Column("used_at", Moment),
    sa.Column("revoked_at", Moment),
    sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("locked_at", Moment),
)

#: wrong tokens and wrong dates of birth per client address (hashed), for throttling
link_failures = sa.Table(
    "loop_link_failures", metadata,
    sa.Column("id", SerialId, primary_key=True, autoincrement=True),
    sa.Column("source_hash", sa.String(64), nullable=False),
    sa.Column("at", Moment, nullable=False),
)
sa.Index("ix_loop_link_failures_source", link_failures.c.source_hash, link_failures.c.at)

#: the short session a note link opens after the date-of-birth check (cookie value hashed)
sessions = sa.Table(
    "loop_sessions", metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("link_id", sa.String(32), nullable=False),
    sa.Column("referral_id", sa.String(64), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("expires_at", Moment, nullable=False),
)

#: documents uploaded through a link (the DocumentReference points at them)
files = sa.Table(
    "loop_files", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("content_type", sa.String(128), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("filename", sa.String(256), nullable=False, server_default=""),
    sa.Column("content", sa.LargeBinary, nullable=False),
    sa.Column("created_at", Moment, nullable=False),
)

#: each milestone update for a referrer: sent at once (FHIR, v2) or gathered for the digest
updates = sa.Table(
    "loop_updates", metadata,
    sa.Column("id", SerialId, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(512), nullable=False, unique=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("referrer", sa.String(128), nullable=False),
    sa.Column("milestone", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("about_seq", sa.Integer, nullable=False),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("sent_at", Moment),
    #: the digest that carried it (email)
    sa.Column("digest", sa.String(256), nullable=False, server_default=""),
)
sa.Index("ix_loop_updates_pending", updates.c.channel, updates.c.referrer, updates.c.sent_at)

#: each consult note delivered to a referrer, and its receipt
deliveries = sa.Table(
    "loop_deliveries", metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("referrer", sa.String(128), nullable=False),
    sa.Column("document", sa.String(256), nullable=False),
    sa.Column("document_server", sa.String(512), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | sent | received | failed
    sa.Column("remote", sa.String(512), nullable=False, server_default=""),
    sa.Column("receipt", sa.String(256), nullable=False, server_default=""),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("sent_at", Moment),
    sa.Column("received_at", Moment),
)

TABLES = [chases, links, link_failures, sessions, files, updates, deliveries]
