"""Referral <-> JSON-ready dict, for the store's `state` column."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from referrals.model import Clock, Link, Reason, Referral, Stage


def referral_to_dict(referral: Referral) -> dict[str, Any]:
    return {
        "id": referral.id, "source_key": referral.source_key,
        "service_request": referral.service_request, "patient": referral.patient,
        "stage": referral.stage.value, "requester": referral.requester,
        "performer": referral.performer, "owner": referral.owner, "priority": referral.priority,
        "specialty": referral.specialty, "reason_text": referral.reason_text,
        "payer": referral.payer, "auth_state": referral.auth_state,
        "held_from": referral.held_from.value if referral.held_from else None,
        "status_reason": ({"code": referral.status_reason.code, "text": referral.status_reason.text}
                          if referral.status_reason else None),
        "deadline": _iso(referral.deadline), "created_at": _iso(referral.created_at),
        "updated_at": _iso(referral.updated_at), "version": referral.version,
        "outreach_attempts": referral.outreach_attempts,
        "inputs": [_link(link) for link in referral.inputs],
        "outputs": [_link(link) for link in referral.outputs],
        "identifiers": [list(pair) for pair in referral.identifiers],
        **({"clocks": [clock_to_dict(c) for c in referral.clocks]} if referral.clocks else {}),
    }


def referral_from_dict(data: dict[str, Any]) -> Referral:
    reason = data.get("status_reason")
    return Referral(
        id=data["id"], source_key=data["source_key"], service_request=data["service_request"],
        patient=data["patient"], stage=Stage(data["stage"]), requester=data.get("requester", ""),
        performer=data.get("performer", ""), owner=data.get("owner", ""),
        priority=data.get("priority", "routine"), specialty=data.get("specialty", ""),
        reason_text=data.get("reason_text", ""), payer=data.get("payer", ""),
        auth_state=data.get("auth_state", ""),
        held_from=Stage(data["held_from"]) if data.get("held_from") else None,
        status_reason=Reason(reason["code"], reason.get("text", "")) if reason else None,
        deadline=_moment(data.get("deadline")),
        created_at=_moment(data["created_at"]) or datetime.min,
        updated_at=_moment(data["updated_at"]) or datetime.min,
        version=int(data["version"]), outreach_attempts=int(data.get("outreach_attempts", 0)),
        inputs=tuple(Link(**link) for link in data.get("inputs", [])),
        outputs=tuple(Link(**link) for link in data.get("outputs", [])),
        identifiers=tuple((str(s), str(v)) for s, v in data.get("identifiers", [])),
        clocks=tuple(clock_from_dict(c) for c in data.get("clocks", [])),
    )


def clock_to_dict(clock: Clock) -> dict[str, Any]:
    return {"program": clock.program, "goal": clock.goal,
            "started_at": _iso(clock.started_at), "due_at": _iso(clock.due_at),
            "met_at": _iso(clock.met_at), "missed_at": _iso(clock.missed_at)}


def clock_from_dict(data: dict[str, Any]) -> Clock:
    return Clock(program=str(data["program"]), goal=str(data.get("goal", "")),
                 started_at=datetime.fromisoformat(data["started_at"]),
                 due_at=datetime.fromisoformat(data["due_at"]), met_at=_moment(data.get("met_at")),
                 missed_at=_moment(data.get("missed_at")))


def _link(link: Link) -> dict[str, str]:
    return {"type": link.type, "reference": link.reference, "display": link.display}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
