"""Register Refloop on a FHIR server: choose the flavour, create (or reuse) our Subscription with
a per-subscription secret and an unguessable endpoint, wait until the server activates it."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from referrals.errors import PeerError
from subscriptions.client import FhirClient
from subscriptions.config import CATEGORY_NAMES, FhirServer
from subscriptions.discovery import BACKPORT, BACKPORT_PROFILE, POLLING, R5_TOPIC, Choice, Topic
from subscriptions.registry import REFERRAL_KIND, REFERRALS, Hook, Registry

BP_SD = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
HAPI = "http://hapifhir.io/fhir/StructureDefinition"
CHANNEL_TYPES = "http://terminology.hl7.org/CodeSystem/subscription-channel-type"
REASON = "Refloop referral intake"

log = logging.getLogger("refloop.subscriptions.register")


@dataclass(frozen=True)
class Outcome:
    server: str
    flavour: str
    why: str
    status: str
    hook_id: str | None = None
    endpoint: str | None = None
    subscription_id: str | None = None
    reused: bool = False
    criteria: str = ""
    detail: str = ""
    detects: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_classic_subscription(hook: Hook, criteria: str) -> dict[str, Any]:
    """R4 classic rest-hook: the server PUTs each matching resource to {endpoint}/{type}/{id}.
    The HAPI extensions (ignored by other servers) ask for DELETE notifications and more
    delivery retries."""
    return {
        "resourceType": "Subscription", "status": "requested", "reason": REASON,
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": hook.url,
                    "payload": "application/fhir+json", "header": [hook.header],
                    "extension": [
                        {"url": f"{HAPI}/subscription-send-delete-messages",
                         "valueBoolean": True},
                        {"url": f"{HAPI}/subscription-delivery-retry-count",
                         "valueInteger": 10}]},
    }


def build_backport_subscription(hook: Hook, topic: Topic, filters: list[str],
                                content: str = "id-only") -> dict[str, Any]:
    """R4 backport (topic-based): history Bundles with a Parameters status entry."""
    subscription: dict[str, Any] = {
        "resourceType": "Subscription", "meta": {"profile": [BACKPORT_PROFILE]},
        "status": "requested", "reason": REASON, "criteria": topic.url,
        "channel": {"type": "rest-hook", "endpoint": hook.url,
                    "payload": "application/fhir+json", "header": [hook.header],
                    "_payload": {"extension": [{"url": f"{BP_SD}/backport-payload-content",
                                                "valueCode": content}]},
                    "extension": [{"url": f"{BP_SD}/backport-timeout", "valueUnsignedInt": 30}]},
    }
    if filters:
        subscription["_criteria"] = {"extension": [
            {"url": f"{BP_SD}/backport-filter-criteria", "valueString": f} for f in filters]}
    return subscription


def build_r5_subscription(hook: Hook, topic: Topic, filters: list[tuple[str, str]],
                          heartbeat_seconds: int, content: str = "id-only") -> dict[str, Any]:
    """R5 topic-based: `subscription-notification` Bundles; handshake and heartbeats on servers
    that send them. Our secret goes in `parameter` (R5's rest-hook headers) unless the hook is
    authenticated by its path alone."""
    subscription: dict[str, Any] = {
        "resourceType": "Subscription", "status": "requested", "reason": REASON,
        "topic": topic.url,
        "channelType": {"system": CHANNEL_TYPES, "code": "rest-hook"},
        "endpoint": hook.url, "contentType": "application/fhir+json", "content": content,
        "heartbeatPeriod": heartbeat_seconds, "timeout": 30,
    }
    if filters:
        subscription["filterBy"] = [{"resourceType": "ServiceRequest", "filterParameter": name,
                                     "value": value} for name, value in filters]
    if not hook.path_only:
        subscription["parameter"] = [{"name": "Authorization", "value": f"Bearer {hook.secret}"}]
    return subscription


def backport_filters(server: FhirServer, topic: Topic) -> tuple[list[str], list[str]]:
    """(filters the topic allows, parameters dropped because it does not)."""
    kept, dropped = [], []
    for name, value in server.criteria_params:
        if not topic.filters or name.split(":")[0] in topic.filters:
            kept.append(f"{server.criteria_type}?{name}={value}")
        else:
            dropped.append(name)
    return kept, dropped


def describe_detection(server: FhirServer) -> str:
    """What will become a referral, in words (the register report)."""
    parts = []
    for name, value in server.criteria_params:
        if name.split(":")[0] == "category":
            names = [f"{v} ({CATEGORY_NAMES[v]})" if v in CATEGORY_NAMES else v
                     for v in value.split(",")]
            parts.append(f"category {' or '.join(names)}")
        else:
            parts.append(f"{name}={value}")
    which = f"with {', '.join(parts)}" if parts else "of any kind (no criteria)"
    checked = ", ".join(n for n in ("status", "intent", "priority", "category")
                        if any(p.split(":")[0] == n for p, _ in server.criteria_params))
    again = f"; Refloop checks {checked} again on each one" if checked else ""
    return f"detects {server.criteria_type}s {which}{again}; only active or on-hold ones open " \
           "a referral"


@dataclass
class Registrar:
    registry: Registry
    base_url: str

    def register(self, server: FhirServer, client: FhirClient, choice: Choice) -> Outcome:
        if choice.flavour == POLLING:
            return self._polling(server, choice)
        existing = self._reusable(server, client, choice)
        if existing is not None:
            return existing
        hook = self.registry.open_hook(server=server.base, purpose=REFERRALS,
                                       deliver_kind=REFERRAL_KIND, flavour=choice.flavour,
                                       criteria=server.criteria, status="requested",
                                       path_only=server.hook_auth == "path")
        detail = ""
        if choice.flavour == R5_TOPIC and choice.topic is not None:
            filters, dropped = backport_filters(server, choice.topic)
            pairs = [(n, v) for n, _, v in (f.split("?", 1)[1].partition("=") for f in filters)]
            body = build_r5_subscription(hook, choice.topic, pairs, server.heartbeat_seconds)
            if dropped:
                detail = f"topic cannot filter by {', '.join(dropped)}; Refloop checks those " \
                         "itself"
        elif choice.flavour == BACKPORT and choice.topic is not None:
            filters, dropped = backport_filters(server, choice.topic)
            body = build_backport_subscription(hook, choice.topic, filters)
            if dropped:
                detail = f"topic cannot filter by {', '.join(dropped)}; Refloop checks those " \
                         "itself"
        else:
            body = build_classic_subscription(hook, server.criteria)
        created = client.send("POST", "Subscription", body=body, ok=(200, 201)).body
        subscription_id = str((created or {}).get("id") or "")
        if not subscription_id:
            raise PeerError(f"{server.base} created the Subscription but returned no id",
                            retryable=False)
        self.registry.attach(hook.id, subscription_id, status="requested")
        status = self.wait_active(client, subscription_id, server.activation_timeout)
        self.registry.set_status(hook.id, status)
        self._replace_older(server, client, choice.flavour, hook.id)
        log.info("subscription registered", extra={"server": server.base,
                                                   "subscription": subscription_id,
                                                   "flavour": choice.flavour, "status": status})
        return Outcome(server.base, choice.flavour, choice.why, status, hook.id, hook.url,
                       subscription_id, False, server.criteria,
                       detail or _status_detail(status), describe_detection(server))

    def _replace_older(self, server: FhirServer, client: FhirClient, flavour: str,
                       kept: str) -> None:
        """Delete our earlier Subscriptions of this flavour with other criteria (a changed
        criteria or categories): each would go on delivering what is no longer wanted."""
        for row in self.registry.rows(server=server.base, purpose=REFERRALS):
            if row.hook_id == kept or row.flavour != flavour or not row.subscription_id or \
                    row.status in ("missing", "replaced"):
                continue
            try:
                client.send("DELETE", f"Subscription/{row.subscription_id}",
                            ok=(200, 202, 204, 404, 410))
            except PeerError as exc:
                self.registry.record_error(row.hook_id, f"could not delete: {exc}")
                continue
            self.registry.set_status(row.hook_id, "replaced",
                                     f"replaced by a Subscription with criteria "
                                     f"{server.criteria}")

    def wait_active(self, client: FhirClient, subscription_id: str, timeout: float) -> str:
        """Poll the Subscription until the server activates it (or errors), up to `timeout`."""
        deadline = time.monotonic() + timeout
        status = "requested"
        while True:
            body = client.get(f"Subscription/{subscription_id}").body or {}
            status = str(body.get("status") or "unknown")
            if status != "requested" or time.monotonic() >= deadline:
                return status
            time.sleep(0.25)

    def reactivate(self, client: FhirClient, hook_id: str, subscription_id: str) -> str:
        """Put an `error`/`off` Subscription back to `requested` (the client's job, per the IG),
        and point it at our current endpoint if our public URL changed."""
        reply = client.send("GET", f"Subscription/{subscription_id}", ok=(200, 404, 410))
        if reply.status != 200 or not isinstance(reply.body, dict):
            self.registry.set_status(hook_id, "missing",
                                     f"Subscription/{subscription_id} is gone from the server")
            return "missing"
        current = reply.body
        endpoint = self.registry.url_for(hook_id)
        r5 = "channel" not in current and "topic" in current  # R5: endpoint at the top
        channel = dict(current.get("channel") or {})
        held = current.get("endpoint") if r5 else channel.get("endpoint")
        if current.get("status") in ("error", "off") or held != endpoint:
            current = {**current, "status": "requested"}
            if r5:
                current["endpoint"] = endpoint
            else:
                current["channel"] = {**channel, "endpoint": endpoint}
            current.pop("error", None)
            client.send("PUT", f"Subscription/{subscription_id}", body=current, ok=(200, 201))
            status = self.wait_active(client, subscription_id, 10.0)
        else:
            status = str(current.get("status"))
        self.registry.set_status(hook_id, status)
        return status

    def rotate_secret(self, client: FhirClient, hook_id: str, grace_seconds: float) -> Hook:
        """A new secret for the hook, put in its Subscription's `channel.header` on the server
        (replacing the Authorization line, keeping other headers). The previous secret stays
        accepted for `grace_seconds`; if the server refuses the change, the rotation is undone
        and the error raised."""
        row = self.registry.get(hook_id)
        if not row.subscription_id:
            raise PeerError(f"hook {hook_id[:6]} has no Subscription on {row.server}; nothing "
                            "to update", retryable=False)
        hook = self.registry.rotate_secret(hook_id, grace_seconds)
        try:
            reply = client.send("GET", f"Subscription/{row.subscription_id}", ok=(200,))
            current = reply.body if isinstance(reply.body, dict) else {}
            channel = dict(current.get("channel") or {})
            others = [h for h in channel.get("header") or []
                      if isinstance(h, str) and not h.lower().startswith("authorization:")]
            channel["header"] = [hook.header, *others]
            client.send("PUT", f"Subscription/{row.subscription_id}",
                        body={**current, "channel": channel}, ok=(200, 201))
        except Exception:
            self.registry.restore_secret(hook_id)
            raise
        log.info("hook secret rotated", extra={"server": row.server, "hook": hook_id[:6],
                                               "subscription": row.subscription_id})
        return hook

    def _reusable(self, server: FhirServer, client: FhirClient, choice: Choice
                  ) -> Outcome | None:
        for row in self.registry.rows(server=server.base, purpose=REFERRALS):
            if row.flavour != choice.flavour or row.criteria != server.criteria or \
                    not row.subscription_id or row.status in ("missing", "replaced"):
                continue
            status = self.reactivate(client, row.hook_id, row.subscription_id)
            if status == "missing":
                continue
            return Outcome(server.base, choice.flavour, choice.why, status, row.hook_id,
                           self.registry.url_for(row.hook_id), row.subscription_id, True,
                           server.criteria, "reused our existing Subscription",
                           describe_detection(server))
        return None

    def _polling(self, server: FhirServer, choice: Choice) -> Outcome:
        rows = []
        for row in self.registry.rows(server=server.base, purpose=REFERRALS):
            if row.flavour != POLLING or row.status == "replaced":
                continue
            if row.criteria == server.criteria:
                rows.append(row)
            else:
                self.registry.set_status(row.hook_id, "replaced",
                                         f"criteria changed to {server.criteria}")
        if rows:
            return Outcome(server.base, POLLING, choice.why, "polling", rows[0].hook_id,
                           criteria=server.criteria, reused=True,
                           detects=describe_detection(server))
        hook = self.registry.open_hook(server=server.base, purpose=REFERRALS,
                                       deliver_kind=REFERRAL_KIND, flavour=POLLING,
                                       criteria=server.criteria, status="polling")
        return Outcome(server.base, POLLING, choice.why, "polling", hook.id,
                       criteria=server.criteria, detail="no Subscription; reconciliation "
                       f"polls every {server.poll_interval:.0f} s",
                       detects=describe_detection(server))


def _status_detail(status: str) -> str:
    if status == "active":
        return "the server activated the Subscription"
    if status == "requested":
        return "still 'requested': the server has not activated it yet (on HAPI: is " \
               "resthook_enabled set?); polling covers the meantime"
    return f"the server set status {status!r}; see 'refloop subscriptions list'"

