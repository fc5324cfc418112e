"""What the PAS adapter shows people about one referral: sections for `refloop referrals show`
and the SMART app's referral page (wiring `referral_details`: name -> (JSON data, (table headers,
table rows))). The payer replies Refloop could not use carry their body as received."""

from __future__ import annotations

from typing import Any

from pas_client.eligibility import summary
from pas_client.store import PriorAuthRequest, PriorAuthStore, StoredReply

Section = tuple[list[dict[str, Any]], tuple[list[str], list[list[Any]]]]
#: replies shown with their body: the ones Refloop could not use
SHOWN_RAW = frozenset({"uninterpretable", "rejected", "refused"})
RAW_LIMIT = 4000


def referral_details(store: PriorAuthStore, referral_id: str) -> dict[str, Section]:
    requests = store.for_referral(referral_id)
    replies = store.replies(referral_id=referral_id)
    sections: dict[str, Section] = {}
    found = store.coverage(referral_id)
    if found is not None:
        sections["coverage_and_eligibility"] = coverage_section(found)
    if requests:
        sections["prior_authorization"] = (
            [request_json(r) for r in requests],
            (["request", "kind", "payer", "status", "auth number", "next $inquire",
              "deadline", "problem"], [request_row(r) for r in requests]))
    if replies:
        sections["payer_replies"] = (
            [reply_json(r) for r in replies],
            (["reply", "operation", "HTTP", "read as", "bytes", "note"],
             [[r.id, r.operation, r.http_status, r.interpretation or "-", len(r.body),
               r.note[:70]] for r in replies]))
    return sections


def coverage_section(found: dict[str, Any]) -> Section:
    """Authorization required / not required / unknown with its source; the eligibility
    answer; the CRD cards."""
    rows: list[list[Any]] = [["authorization",
                              f"{found['requirement'].replace('-', ' ')} ({found['source']})"]]
    eligibility = found.get("eligibility")
    if eligibility:
        rows.append(["eligibility", eligibility["error"] if "error" in eligibility
                     else summary(eligibility)])
    crd = found["detail"].get("crd") or {}
    if crd.get("error"):
        rows.append(["CRD", crd["error"]])
    rows += [["CRD card", card["summary"]] for card in crd.get("cards", [])]
    data = [{"payer": found["payer"], "requirement": found["requirement"],
             "source": found["source"], "eligibility": eligibility,
             "checked_at": _instant(found["checked_at"])}]
    return data, ([f"{found['payer']}, checked {found['checked_at']:%Y-%m-%d %H:%M} UTC", ""],
                  rows)


def request_json(request: PriorAuthRequest) -> dict[str, Any]:
    return {"id": request.id, "kind": request.kind, "payer": request.payer,
            "status": request.status, "auth_number": request.auth_number,
            "next_check": _instant(request.next_check_at),
            "deadline": _instant(request.deadline_at),
            "escalated": _instant(request.escalated_at), "problem": problem(request)}


def request_row(request: PriorAuthRequest) -> list[Any]:
    deadline = "escalated" if request.escalated_at else \
        (f"{request.deadline_at:%Y-%m-%d %H:%M}" if request.deadline_at else "")
    return [request.id[:8], request.kind, request.payer, request.status, request.auth_number,
            f"{request.next_check_at:%Y-%m-%d %H:%M}" if request.next_check_at else "",
            deadline, problem(request)]


def problem(request: PriorAuthRequest) -> str:
    return request.last_error or next(
        (f"{f['path']}: {f['message']}" for f in request.findings if f["severity"] == "error"),
        "")


def reply_json(reply: StoredReply) -> dict[str, Any]:
    data = reply.to_json()
    if reply.interpretation in SHOWN_RAW:
        headers = "\n".join(f"{k}: {v}" for k, v in reply.headers.items())
        data["body"] = f"HTTP {reply.http_status}\n{headers}\n\n{reply.text(RAW_LIMIT)}"
    return data


def _instant(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None
