"""Pure parts of the pages: SVG chart geometry, AuditEvent shape, worklist cursors, actions
offered by stage."""

from __future__ import annotations

from dataclasses import replace

import pytest

from referrals.model import Referral, Stage
from referrals.worklist import CursorError, _decode
from smart_app.actions import available
from smart_app.audit import build_audit_event
from smart_app.charts import column_bars, funnel_bars
from smart_app.context import LaunchContext
from smart_app.sessions import Session


def test_funnel_bars_scale_to_the_first_step():
    bars = funnel_bars([("created", 200), ("accepted", 100), ("loop closed", 0)], width=300)
    assert [b.width for b in bars] == [300.0, 150.0, 0.0]
    assert [b.percent for b in bars] == ["100%", "50%", "0%"]
    assert [b.y for b in bars] == [0, 28, 56]


def test_funnel_of_an_empty_store_has_no_division_by_zero():
    assert [b.width for b in funnel_bars([("created", 0)])] == [0.0]


def test_aging_columns_grow_upwards_from_the_baseline():
    bars = column_bars([("0-2 d", 10), ("3-7 d", 5)], height=100)
    assert (bars[0].y, bars[0].height) == (0.0, 100.0)
    assert (bars[1].y, bars[1].height) == (50.0, 50.0)
    assert [b.percent for b in bars] == ["67%", "33%"]


def _session() -> Session:
    return Session(id="abcdefgh123", tenant="t", iss="https://ehr.example/fhir",
                   context=LaunchContext(user="Practitioner/1", user_display="Casey"),
                   csrf_token="x", token_expires_at=None, version=1, sealed_tokens="")


def test_audit_event_follows_balp_read():
    event = build_audit_event(_session(), interaction="read", patient="Patient/9",
                              entities=["Task/1", "ServiceRequest/2"], client_id="refloop")
    assert event["resourceType"] == "AuditEvent" and event["action"] == "R"
    assert event["type"]["code"] == "110110" and event["subtype"][0]["code"] == "read"
    assert event["agent"][0]["who"]["reference"] == "Practitioner/1"
    assert event["agent"][0]["requestor"] is True
    assert event["agent"][1]["who"]["identifier"]["value"] == "refloop"
    roles = [(e.get("what", {}).get("reference"), e["role"]["code"]) for e in event["entity"]
             if "role" in e]
    assert roles == [("Patient/9", "1"), ("Task/1", "4"), ("ServiceRequest/2", "4")]
    detail = event["entity"][-1]["detail"]
    assert {"type": "iss", "valueString": "https://ehr.example/fhir"} in detail


def test_audit_event_for_a_search_carries_the_query_not_names():
    event = build_audit_event(_session(), interaction="search", patient="", entities=[],
                              query="owner=me")
    assert event["action"] == "E"
    assert any(e.get("query") for e in event["entity"])


@pytest.mark.parametrize("cursor", ["not-base64!!", "W10", "WyJ1cGRhdGVkIiwwLG51bGwsIngiXQ"])
def test_foreign_cursors_are_refused(cursor):
    with pytest.raises(CursorError):
        _decode(cursor, "due")


def _referral(stage: Stage) -> Referral:
    return Referral(id="r", source_key="k", service_request="ServiceRequest/1",
                    patient="Patient/1", stage=stage)


def test_actions_offered_follow_the_lifecycle_table():
    detected = {a.name for a in available(_referral(Stage.DETECTED))}
    assert {"accept", "decline", "take", "cancel"} <= detected
    assert "no-show" not in detected and "close-loop" not in detected
    assert "complete-visit" not in detected
    scheduled = {a.name for a in available(_referral(Stage.SCHEDULED))}
    assert {"no-show", "close-loop", "schedule", "hold", "complete-visit"} <= scheduled
    assert "accept" not in scheduled
    assert available(_referral(Stage.LOOP_CLOSED)) == []


@pytest.mark.parametrize(("auth_state", "offered"), [
    ("required", True), ("rejected", True), ("requested", False), ("pended", False)])
def test_authorization_is_offered_while_nobody_asked_or_the_payer_refused(auth_state, offered):
    referral = replace(_referral(Stage.AUTH_PENDING), auth_state=auth_state)
    assert ("request-authorization" in {a.name for a in available(referral)}) is offered
