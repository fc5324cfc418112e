"""The analytics rollups (SQLAlchemy Core; created by migration 0750_analytics).

All three are derived from the event log and rebuilt from it by `refloop analytics rebuild`:

- `analytics_facts`: one row per referral, `analytics.facts.Facts` (its milestones, outcome,
  dimensions), brought up to date from the events the rollup has not read yet;
- `analytics_cube`: the additive counts (`analytics.metrics.Totals`) and duration histograms of
  the referrals of one cohort (`grain` w or m, `period` its first day) for one value of one
  dimension (`dim` all, specialty, referrer, destination, payer, priority), and by month for
  one pair of values of two dimensions (`dim` "specialty+priority", `value` the JSON array of
  both values; analytics.contribution.PAIRS);
- `analytics_dropoff`: per cohort and dimension value, how many referrals ended without a visit
  after which funnel step, how, and with which reason code.
"""

from __future__ import annotations

import sqlalchemy as sa

from referrals.store.schema import JSONType, Moment

metadata = sa.MetaData()

analytics_facts = sa.Table(
    "analytics_facts", metadata,
    sa.Column("referral_id", sa.String(64), primary_key=True),
    sa.Column("source_key", sa.String(512), nullable=False),
    sa.Column("patient", sa.String(256), nullable=False),
    sa.Column("specialty", sa.String(128), nullable=False, server_default=""),
    sa.Column("referrer", sa.String(256), nullable=False, server_default=""),
    sa.Column("destination", sa.String(256), nullable=False, server_default=""),
    sa.Column("payer", sa.String(256), nullable=False, server_default=""),
    sa.Column("priority", sa.String(16), nullable=False, server_default=""),
    sa.Column("detected_at", Moment, nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("open", sa.Boolean, nullable=False),
    sa.Column("deadline", Moment),
    sa.Column("withdrawn", sa.Boolean, nullable=False),
    sa.Column("accepted_at", Moment),
    sa.Column("contacted_at", Moment),
    sa.Column("scheduled_at", Moment),
    sa.Column("visit_at", Moment),
    sa.Column("note_at", Moment),
    sa.Column("receipt_at", Moment),
    sa.Column("auth_requested_at", Moment),
    sa.Column("auth_decided_at", Moment),
    sa.Column("ended_at", Moment),
    sa.Column("no_shows", sa.Integer, nullable=False, server_default="0"),
    sa.Column("dropped", sa.String(32), nullable=False, server_default=""),
    sa.Column("drop_reason", sa.String(128), nullable=False, server_default=""),
    sa.Column("steps_refloop", sa.Integer, nullable=False, server_default="0"),
    sa.Column("steps_person", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_seq", sa.Integer, nullable=False, server_default="0"),
    *(sa.Column(f"{program}_{what}_at", Moment) for program in ("team", "asm")
      for what in ("due", "met", "missed")),
)
sa.Index("ix_analytics_facts_detected", analytics_facts.c.detected_at,
         analytics_facts.c.referral_id)
sa.Index("ix_analytics_facts_open_deadline", analytics_facts.c.open, analytics_facts.c.deadline)
sa.Index("ix_analytics_facts_patient", analytics_facts.c.patient, analytics_facts.c.detected_at)
for _dim in ("specialty", "referrer", "destination", "payer", "priority"):
    sa.Index(f"ix_analytics_facts_{_dim}", analytics_facts.c[_dim], analytics_facts.c.detected_at)

#: the additive counts of a cohort's referrals (analytics.metrics.Totals), one column each
COUNT_COLUMNS = ("referrals", "withdrawn", "accepted", "contacted", "scheduled", "visited",
                 "notes", "receipts", "no_shows", "open", "auth_requested", "auth_decided",
                 "steps_refloop", "steps_person", "team_started", "team_on_time", "team_late",
                 "team_missed", "asm_started", "asm_on_time", "asm_late", "asm_missed")

#: a cube cell's dimension: "all", one dimension, or a pair ("specialty+priority")
DIM_LENGTH = 40
#: a cube cell's value: one dimension's value, or a pair's two values JSON-encoded
VALUE_LENGTH = 1100

analytics_cube = sa.Table(
    "analytics_cube", metadata,
    sa.Column("grain", sa.String(1), primary_key=True),
    sa.Column("dim", sa.String(DIM_LENGTH), primary_key=True),
    sa.Column("value", sa.String(VALUE_LENGTH), primary_key=True),
    sa.Column("period", sa.String(10), primary_key=True),
    *(sa.Column(name, sa.Integer, nullable=False, server_default="0") for name in COUNT_COLUMNS),
    #: duration name -> {bin index: count} (analytics.metrics.EDGES)
    sa.Column("histograms", JSONType, nullable=False),
)
sa.Index("ix_analytics_cube_period", analytics_cube.c.grain, analytics_cube.c.dim,
         analytics_cube.c.period)

analytics_dropoff = sa.Table(
    "analytics_dropoff", metadata,
    sa.Column("grain", sa.String(1), primary_key=True),
    sa.Column("dim", sa.String(DIM_LENGTH), primary_key=True),
    sa.Column("value", sa.String(VALUE_LENGTH), primary_key=True),
    sa.Column("period", sa.String(10), primary_key=True),
    sa.Column("step", sa.String(32), primary_key=True),
    sa.Column("outcome", sa.String(32), primary_key=True),
    sa.Column("reason", sa.String(128), primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
)

TABLES = [analytics_facts, analytics_cube, analytics_dropoff]
