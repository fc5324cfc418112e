"""Closing the loop, as events: the names of the lifecycle actions that record chasing the
consult note, keeping the referring provider informed, the report reaching them (what CMS50
counts) and the program clocks (TEAM, ASM).

Each name is an action of `referrals.lifecycle.TABLE`, so every occurrence is a row of the event
log (`referral_events.action`) with its Provenance, and the analytics count them there, never
from counters kept on the side. docs/loop.md describes each event and the keys of its `data`.
The consult note reaching Refloop is the existing `close-loop` (a final note) or `link` (an
interim one), with the DocumentReference in `add_outputs`.
"""

from __future__ import annotations

#: one step of the chase ladder was taken (data: step, destination, attempt)
CHASE_NOTE = "chase-note"
#: a milestone update reached the referring provider's system or mail (data: milestone,
#: channel, about_seq)
UPDATE_REFERRER = "update-referrer"
#: the consult note was sent to the referrer as a secure link; receipt follows when it is opened
#: (data: channel, document)
SEND_NOTE = "send-note"
#: the referring provider's system received the consult note: the CMS50 / MIPS 374 numerator
#: event (data: channel, document, received_at, receipt)
RECORD_RECEIPT = "record-receipt"
#: a program clock started, was met, or ran out (data: clock {program, ...})
START_CLOCK = "start-clock"
MEET_CLOCK = "meet-clock"
MISS_CLOCK = "miss-clock"

#: every closed-loop action; all are allowed after the referral finished (the referrer is told,
#: and receives the report, after the loop closed or the referral failed)
LOOP_ACTIONS = (CHASE_NOTE, UPDATE_REFERRER, SEND_NOTE, RECORD_RECEIPT, START_CLOCK, MEET_CLOCK,
                MISS_CLOCK)
CLOCK_ACTIONS = (START_CLOCK, MEET_CLOCK, MISS_CLOCK)

#: programs with a clock. TEAM (CMS Transforming Episode Accountability Model, 2026-2030): a
#: post-discharge referral to primary care, the visit due within 30 days of discharge. ASM (CMS
#: Ambulatory Specialty Model, from 2027): the specialist's feedback must reach the primary-care
#: clinician.
TEAM = "team"
ASM = "asm"
PROGRAMS = {TEAM: "TEAM post-discharge primary care visit",
            ASM: "ASM specialist feedback to primary care"}
#: what meets a clock: the visit happening, or the report reaching the referrer
GOAL_VISIT = "visit"
GOAL_REPORT = "report"
GOALS = (GOAL_VISIT, GOAL_REPORT)

#: the milestones a referring provider is told about (the `milestone` of update-referrer)
MILESTONES = ("accepted", "declined", "scheduled", "no-show", "visit-completed",
              "note-available", "failed")
