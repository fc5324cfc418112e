"""The bridge's own tables (migrations 0003_hl7, 0350_hl7_keys, 0351_hl7_entity_state):
business keys, identifiers, parked messages, outbound log, the v2 state of mapped things."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: business keys (placer/filler order numbers, RF1-6/RF1-11) -> the referral they belong to
referral_keys = sa.Table(
    "hl7_referral_keys", metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("sender", sa.String(256), nullable=False),
    sa.Column("patient", sa.String(256), nullable=False, server_default="", index=True),
)

#: patient identifiers (system, value) -> our Patient id; merged ids point at the survivor
patient_ids = sa.Table(
    "hl7_patient_ids", metadata,
    sa.Column("system", sa.String(512), primary_key=True),
    sa.Column("value", sa.String(256), primary_key=True),
    sa.Column("patient_id", sa.String(64), nullable=False, index=True),
    sa.Column("server", sa.String(256), nullable=False),
)

#: messages waiting for a referral or patient that has not arrived yet
parked = sa.Table(
    "hl7_parked", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("inbox_id", sa.BigInteger, nullable=False),
    sa.Column("waiting_for", sa.String(512), nullable=False, index=True),
    sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("inbox_id", "waiting_for", name="uq_hl7_parked_inbox_key"),
)
sa.Index("ix_hl7_parked_parked_at", parked.c.parked_at)

#: v2 messages we sent to partners, with the ACK they returned
outbound_log = sa.Table(
    "hl7_outbound_log", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("work_key", sa.String(512), nullable=False, unique=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("sender", sa.String(256), nullable=False),
    sa.Column("message_type", sa.String(32), nullable=False),
    sa.Column("control_id", sa.String(64), nullable=False),
    sa.Column("ack_code", sa.String(4), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
)

#: the effective v2 segments of each mapped thing (merge.py): "Patient/<id>",
#: "ServiceRequest/<id>", "Appointment/<id>" -> segments in the standard encoding, CR-separated
entity_state = sa.Table(
    "hl7_entity_state", metadata,
    sa.Column("entity", sa.String(300), primary_key=True),
    sa.Column("segments", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

TABLES = [referral_keys, patient_ids, parked, outbound_log, entity_state]
