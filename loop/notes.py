"""What a specialist's FHIR server tells us: a consult note (DocumentReference) and a finished
Encounter, by subscription (`refloop loop subscribe`: rest-hook Subscriptions delivered to a hook
of the subscriptions adapter) or read from the chase Task's output.

A note or encounter names its referral by a reference to our chase Task, or to the referral's
ServiceRequest (relative on the EHR the referral came from, or absolute); a note may also name
its Encounter, whose `basedOn` or Appointment then does. One that names none of ours is left
alone. A current final note closes the loop (`close-loop`; an interim one is linked), a finished
encounter completes the visit (`complete-visit`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from loop.client import FhirClient
from loop.context import LOOP, Core
from loop.fhir import REFERRAL_SYSTEM, source_base
from referrals.errors import IllegalTransition, PeerError, RefloopError
from referrals.lifecycle import allowed_actions
from referrals.model import LINK_CONSULT_NOTE, Command, Link, Referral
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.loop.notes")

NOTIFICATION_KIND = "loop.notification"
CRITERIA = ("DocumentReference?status=current", "Encounter?status=finished")

ClientFor = Callable[[str], FhirClient]
TaskOwner = Callable[[str, str], "str | None"]


class Notes:
    def __init__(self, core: Core, client_for: ClientFor, task_owner: TaskOwner) -> None:
        self.core = core
        self.client_for = client_for
        #: (server, Task id) -> the referral id whose chase Task it is
        self.task_owner = task_owner

    def apply_document(self, server: str, document: dict[str, Any], via: str) -> str:
        """Link a consult note from `server` to its referral; what was done."""
        if document.get("resourceType") != "DocumentReference" or not document.get("id"):
            return "not a DocumentReference"
        if document.get("status") != "current":
            return f"status {document.get('status')}"
        referral = self.referral_of(server, document)
        if referral is None:
            return "no referral of ours"
        link = Link(LINK_CONSULT_NOTE, f"DocumentReference/{document['id']}", "consult note")
        if any(o.reference == link.reference for o in referral.outputs):
            return "known"
        allowed = allowed_actions(referral.stage)
        final = document.get("docStatus") != "preliminary"
        action = "close-loop" if final and "close-loop" in allowed else \
            "link" if "link" in allowed else ""
        if not action:
            return f"referral is {referral.stage.value}"
        try:
            with self.core.db.write() as conn:
                self.core.resources.put(document, server=server, conn=conn)
                self.core.referrals.act(referral.id, Command(
                    action, actor=LOOP, at=self.core.now(), source=via,
                    source_message=f"DocumentReference/{document['id']}",
                    changes={"add_outputs": [link]}), conn=conn)
        except IllegalTransition as exc:
            log.info("note not linked", extra={"referral_id": referral.id, "why": str(exc)})
            return "refused"
        log.info("consult note in", extra={"referral_id": referral.id, "via": via,
                                           "action": action})
        return action

    def apply_encounter(self, server: str, encounter: dict[str, Any], via: str) -> str:
        """A finished Encounter: the visit happened."""
        if encounter.get("status") != "finished":
            return f"status {encounter.get('status')}"
        referral = self._from_encounter(server, encounter)
        if referral is None:
            return "no referral of ours"
        if "complete-visit" not in allowed_actions(referral.stage) or \
                referral.stage.value == "visit-completed":
            return f"referral is {referral.stage.value}"
        link = Link("Encounter", f"Encounter/{encounter['id']}", "visit")
        with self.core.db.write() as conn:
            self.core.resources.put(encounter, server=server, conn=conn)
            self.core.referrals.act(referral.id, Command(
                "complete-visit", actor=LOOP, at=self.core.now(), source=via,
                source_message=f"Encounter/{encounter['id']}",
                changes={"add_outputs": [link]}), conn=conn)
        return "complete-visit"

    def handle_notification(self, item: WorkItem) -> None:
        """A notification from a specialist's server (the subscriptions adapter's contract):
        each DocumentReference or Encounter in it, read from the server when only named."""
        payload = item.payload
        server = str(payload["server"]).rstrip("/")
        found = {f"{r.get('resourceType')}/{r.get('id')}": r
                 for r in payload.get("resources") or [] if isinstance(r, dict)}
        for event in payload.get("events") or []:
            focus = str(event.get("focus") or "")
            if focus.split("/")[0] in ("DocumentReference", "Encounter") and \
                    focus not in found:
                body = self.client_for(server).try_read(focus)
                if body is not None:
                    found[focus] = body
        for resource in found.values():
            if resource.get("resourceType") == "DocumentReference":
                self.apply_document(server, resource, "loop:fhir-subscription")
            elif resource.get("resourceType") == "Encounter":
                self.apply_encounter(server, resource, "loop:fhir-subscription")

    def subscribe(self, base: str) -> list[str]:
        """rest-hook Subscriptions on `base` for current notes and finished encounters, each
        delivered to a hook of the subscriptions adapter; their ids."""
        hooks = self.core.hooks
        if hooks is None:
            raise RefloopError("the subscriptions adapter is not wired: cannot receive "
                               "notifications; notes still come through the chase Task")
        made = []
        client = self.client_for(base)
        for criteria in CRITERIA:
            hook = hooks.open_hook(server=base.rstrip("/"), purpose="loop",
                                   deliver_kind=NOTIFICATION_KIND)
            reply = client.send("POST", "Subscription", body={
                "resourceType": "Subscription", "status": "requested",
                "reason": "Consult notes and finished visits of referrals, for Refloop",
                "criteria": criteria,
                "channel": {"type": "rest-hook", "endpoint": hook.url,
                            "payload": "application/fhir+json", "header": [hook.header]}},
                ok=(200, 201))
            subscription_id = str((reply.body or {}).get("id") or "")
            if not subscription_id:
                raise PeerError(f"{base} created no Subscription id")
            hooks.attach(hook.id, subscription_id)
            made.append(subscription_id)
        return made

    # -- which referral -----------------------------------------------------------------------

    def referral_of(self, server: str, document: dict[str, Any]) -> Referral | None:
        context = document.get("context") or {}
        for related in context.get("related") or []:
            found = self._from_reference(server, related)
            if found is not None:
                return found
        for encounter in context.get("encounter") or []:
            reference = str(encounter.get("reference") or "")
            if "Encounter/" in reference:
                body = self.client_for(server).try_read(reference)
                if body is not None:
                    found = self._from_encounter(server, body)
                    if found is not None:
                        return found
        return None

    def _from_encounter(self, server: str, encounter: dict[str, Any]) -> Referral | None:
        for based in encounter.get("basedOn") or []:
            found = self._from_reference(server, based)
            if found is not None:
                return found
        for appointment in encounter.get("appointment") or []:
            reference = str(appointment.get("reference") or "")
            if "Appointment/" not in reference:
                continue
            body = self.client_for(server).try_read(reference)
            for based in (body or {}).get("basedOn") or []:
                found = self._from_reference(server, based)
                if found is not None:
                    return found
        return None

    def _from_reference(self, server: str, ref: dict[str, Any]) -> Referral | None:
        identifier = ref.get("identifier") or {}
        if identifier.get("system") == REFERRAL_SYSTEM and identifier.get("value"):
            return self.core.store.try_get(str(identifier["value"]))
        reference = str(ref.get("reference") or "")
        kind, _, rid = reference.rstrip("/").rpartition("/")
        base = kind.rpartition("/")[0] if "/" in kind else ""
        kind = kind.rpartition("/")[2]
        if kind == "Task" and rid:
            owner = self.task_owner(base or server, rid)
            return self.core.store.try_get(owner) if owner else None
        if kind != "ServiceRequest" or not rid:
            return None
        found = self.core.store.try_get_by_service_request(f"ServiceRequest/{rid}")
        if found is None:
            return None
        origin = source_base(found)
        expected = base or server
        return found if origin and origin == expected.rstrip("/") else None


__all__ = ["CRITERIA", "NOTIFICATION_KIND", "Notes"]
