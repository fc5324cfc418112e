"""Tables of the scheduling adapter (migration 0600_scheduling).

Patient link tokens and session cookies are stored only as SHA-256 hashes; a client address is
kept only as a hash, for the per-source attempt limit.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

Moment = sa.DateTime(timezone=True)
Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")

#: one row per link sent to a patient (a referral may have several; each is revocable)
links = sa.Table(
    "scheduling_links", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("expires_at", Moment, nullable=False),
    sa.Column("revoked_at", Moment),
    sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("locked_at", Moment),
    sa.Column("verified_at", Moment),
)

#: wrong dates of birth by client address (hashed), for the per-source limit
dob_failures = sa.Table(
    "scheduling_dob_failures", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("source_hash", sa.String(64), nullable=False),
    sa.Column("at", Moment, nullable=False),
)
sa.Index("ix_scheduling_dob_failures_source", dob_failures.c.source_hash, dob_failures.c.at)

#: the patient's short-lived session after the date-of-birth check (cookie value hashed)
sessions = sa.Table(
    "scheduling_sessions", metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("link_id", sa.String(32), nullable=False),
    sa.Column("referral_id", sa.String(64), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("language", sa.String(8), nullable=False),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("expires_at", Moment, nullable=False),
)
sa.Index("ix_scheduling_sessions_expires", sessions.c.expires_at)

#: appointments of referrals, as booked or seen (our booking, SIU^S12, the SMART app...)
appointments = sa.Table(
    "scheduling_appointments", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("server", sa.String(512), nullable=False),
    sa.Column("appointment_id", sa.String(128), nullable=False),
    sa.Column("destination", sa.String(128), nullable=False, server_default=""),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("start", Moment, nullable=False),
    sa.Column("end", Moment),
    sa.Column("time_zone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("slots", sa.JSON, nullable=False),
    sa.Column("location", sa.String(256), nullable=False, server_default=""),
    sa.Column("clinician", sa.String(256), nullable=False, server_default=""),
    sa.Column("booked_by", sa.String(256), nullable=False, server_default=""),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("updated_at", Moment, nullable=False),
    sa.Column("confirmed_at", Moment),
    sa.Column("checked_at", Moment),
    sa.Column("sequence", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("server", "appointment_id", name="uq_scheduling_appointments_remote"),
)
sa.Index("ix_scheduling_appointments_status_start", appointments.c.status,
         appointments.c.start)

#: the reminder and preparation ladder of each appointment
reminders = sa.Table(
    "scheduling_reminders", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("appointment", sa.String(64), nullable=False),
    sa.Column("referral_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("days_before", sa.Integer, nullable=False),
    sa.Column("due_at", Moment, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("sent_at", Moment),
    sa.UniqueConstraint("appointment", "kind", "days_before",
                        name="uq_scheduling_reminders_step"),
)
sa.Index("ix_scheduling_reminders_due", reminders.c.status, reminders.c.due_at)

#: patients who asked for an earlier date
waitlist = sa.Table(
    "scheduling_waitlist", metadata,
    sa.Column("referral_id", sa.String(64), primary_key=True),
    sa.Column("destination", sa.String(128), nullable=False),
    sa.Column("appointment", sa.String(64), nullable=False),
    sa.Column("current_start", Moment, nullable=False),
    sa.Column("opted_in_at", Moment, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
)
sa.Index("ix_scheduling_waitlist_destination", waitlist.c.destination, waitlist.c.status,
         waitlist.c.opted_in_at)

#: a freed slot offered to a waiting patient; the first to accept books it
offers = sa.Table(
    "scheduling_offers", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("destination", sa.String(128), nullable=False),
    sa.Column("slot_key", sa.String(512), nullable=False, index=True),
    sa.Column("slot", sa.JSON, nullable=False),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("expires_at", Moment, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("decided_at", Moment),
)

#: slots read from SMART Scheduling Links publishers ($bulk-publish), searched locally
published_slots = sa.Table(
    "scheduling_published_slots", metadata,
    sa.Column("source", sa.String(128), primary_key=True),
    sa.Column("slot_id", sa.String(128), primary_key=True),
    sa.Column("schedule_id", sa.String(128), nullable=False),
    sa.Column("location_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("start", Moment, nullable=False),
    sa.Column("end", Moment),
    sa.Column("service_type", sa.String(256), nullable=False, server_default=""),
    sa.Column("location", sa.String(256), nullable=False, server_default=""),
    sa.Column("deep_link", sa.Text, nullable=False, server_default=""),
    sa.Column("phone", sa.String(64), nullable=False, server_default=""),
    sa.Column("updated_at", Moment, nullable=False),
)
sa.Index("ix_scheduling_published_slots_free", published_slots.c.source,
         published_slots.c.status, published_slots.c.start)

#: what was asked of a calendar we cannot book into ourselves (v2 SRM, a deep link)
requests = sa.Table(
    "scheduling_requests", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("destination", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("created_at", Moment, nullable=False),
)

TABLES = [links, dob_failures, sessions, appointments, reminders, waitlist, offers,
          published_slots, requests]
