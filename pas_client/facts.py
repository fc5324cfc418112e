"""What the PAS adapter shows people about one referral, as plain data ({"label", "value",
"kind"}): each prior-authorization request's state and the payer replies it could not use,
shown as received. `refloop referrals show` and the SMART app's referral page print them."""

from __future__ import annotations

from pas_client.store import PriorAuthRequest, PriorAuthStore, StoredReply

Fact = dict[str, str]
#: replies shown in full on the page: the ones Refloop could not use
SHOWN_RAW = frozenset({"uninterpretable", "rejected", "refused"})
RAW_LIMIT = 4000


def referral_facts(store: PriorAuthStore, referral_id: str) -> list[Fact]:
    facts = [request_fact(r) for r in store.for_referral(referral_id)]
    replies = [r for r in store.replies(referral_id=referral_id)
               if r.interpretation in SHOWN_RAW]
    facts += [reply_fact(r) for r in replies[-3:]]
    return facts


def request_fact(request: PriorAuthRequest) -> Fact:
    parts = [request.status]
    if request.auth_number:
        parts.append(f"authorization number {request.auth_number}")
    if request.next_check_at is not None:
        parts.append(f"next $inquire {request.next_check_at:%Y-%m-%d %H:%M} UTC")
    if request.deadline_at is not None and request.escalated_at is None:
        parts.append(f"payer's deadline {request.deadline_at:%Y-%m-%d %H:%M} UTC")
    if request.escalated_at is not None:
        parts.append(f"escalated to the coordinator {request.escalated_at:%Y-%m-%d %H:%M} UTC")
    problem = request.last_error or next(
        (f"{f['path']}: {f['message']}" for f in request.findings if f["severity"] == "error"),
        "")
    if problem:
        parts.append(problem)
    return {"label": f"Prior authorization {request.kind} {request.id[:8]} ({request.payer})",
            "value": "; ".join(parts), "kind": "text"}


def reply_fact(reply: StoredReply) -> Fact:
    headers = "\n".join(f"{k}: {v}" for k, v in reply.headers.items())
    return {"label": f"Payer reply #{reply.id} to {reply.operation}: HTTP {reply.http_status}, "
                     f"{reply.interpretation} ({reply.note[:160]})",
            "value": f"HTTP {reply.http_status}\n{headers}\n\n{reply.text(RAW_LIMIT)}",
            "kind": "raw"}
