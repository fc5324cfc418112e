"""What a FHIR server offers (CapabilityStatement, SMART configuration, subscription topics) and
which flavour to register with it: the decision table of reference/subscriptions.md §5.

Refinement of the table, on purpose: a backport topic is used only when it fires on both create
and update of a ServiceRequest. A create-only topic misses revocations, so a server that also
offers classic criteria subscriptions gets those instead (updates arrive as pushes, not only by
polling); the reason says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from referrals.errors import PeerError
from subscriptions.client import FhirClient

BP = "http://hl7.org/fhir/uv/subscriptions-backport"
BACKPORT_PROFILE = f"{BP}/StructureDefinition/backport-subscription"
TOPIC_CANONICAL = f"{BP}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
BACKPORT_SERVERS = (f"{BP}/CapabilityStatement/backport-subscription-server-r4",
                    f"{BP}/CapabilityStatement/backport-subscription-server",
                    f"{BP}/CapabilityStatement/CapabilitySubscriptionServer")
TOPIC_CODE = "http://hl7.org/fhir/fhir-types|SubscriptionTopic"

CLASSIC, BACKPORT, R5_TOPIC, POLLING = "r4-classic", "r4-backport", "r5-topic", "polling"


@dataclass(frozen=True)
class Topic:
    url: str
    resources: frozenset[str] = frozenset()
    interactions: frozenset[str] = frozenset()
    filters: frozenset[str] = frozenset()

    @property
    def known(self) -> bool:
        """We read its definition (not only its canonical URL)."""
        return bool(self.resources)

    def covers(self, resource: str, interactions: set[str]) -> bool:
        return resource in self.resources and interactions <= self.interactions


@dataclass(frozen=True)
class ServerFacts:
    fhir_version: str
    subscription_create: bool
    backport: bool
    topics: tuple[Topic, ...] = ()
    smart: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    flavour: str
    why: str
    topic: Topic | None = None


def from_capability(capability: dict[str, Any]) -> ServerFacts:
    """The facts the decision needs, from a CapabilityStatement (no topics read yet)."""
    version = str(capability.get("fhirVersion") or "")
    rest = (capability.get("rest") or [{}])[0]
    subscription = next((r for r in rest.get("resource") or []
                         if r.get("type") == "Subscription"), None)
    create = bool(subscription) and any(
        i.get("code") == "create" for i in (subscription or {}).get("interaction") or [])
    profiles = set((subscription or {}).get("supportedProfile") or [])
    canonicals = [e.get("valueCanonical") for e in (subscription or {}).get("extension") or []
                  if e.get("url") == TOPIC_CANONICAL and e.get("valueCanonical")]
    guides = " ".join(capability.get("implementationGuide") or [])
    backport = (BACKPORT_PROFILE in profiles or bool(canonicals)
                or any(i in BACKPORT_SERVERS for i in capability.get("instantiates") or [])
                or "subscriptions-backport" in guides)
    return ServerFacts(version, create, backport, tuple(Topic(str(c)) for c in canonicals))


def choose_flavour(facts: ServerFacts, override: str = "", topic_url: str = "",
                   resource: str = "ServiceRequest", filters: Sequence[str] = ()) -> Choice:
    """The decision table (first match wins). Among several fitting topics, the one that can
    filter by most of `filters` (the criteria's parameter names) comes first."""
    wanted = {"create", "update"}
    pinned = next((t for t in facts.topics if t.url == topic_url), Topic(topic_url)) \
        if topic_url else None
    ranked = sorted(facts.topics, key=lambda t: -len(set(filters) & t.filters))
    full = [t for t in ranked if t.covers(resource, wanted)]
    create_only = [t for t in ranked if t.covers(resource, {"create"})]
    if override == POLLING:
        return Choice(POLLING, "flavour pinned to polling by configuration")
    if override == CLASSIC:
        return Choice(CLASSIC, "flavour pinned to r4-classic by configuration")
    if override == R5_TOPIC and not facts.fhir_version.startswith("5."):
        return Choice(POLLING, f"r5-topic pinned, but the server speaks FHIR "
                      f"{facts.fhir_version or '?'}; polling")
    if override == BACKPORT:
        candidates = full or create_only
        topic = pinned or (candidates[0] if candidates else None)
        if topic is None:
            return Choice(POLLING, "r4-backport pinned, but the server advertises no topic for "
                          f"{resource}; set topic in the [[fhir_servers]] entry")
        return Choice(BACKPORT, f"flavour pinned to r4-backport by configuration; topic "
                      f"{topic.url}", topic)
    if facts.fhir_version.startswith("5."):
        return _choose_r5(facts, override, pinned, full, create_only, resource)
    if pinned is not None and facts.backport:
        return Choice(BACKPORT, f"backport topic {pinned.url} chosen by configuration", pinned)
    if facts.backport and full:
        return Choice(BACKPORT, f"server supports the Subscriptions Backport IG and topic "
                      f"{full[0].url} fires on {resource} create and update", full[0])
    if facts.subscription_create:
        why = "server accepts Subscription create with criteria (R4 classic rest-hook)"
        if create_only:
            why += f"; backport topic {create_only[0].url} fires on create only, so it would " \
                   "miss revocations"
        return Choice(CLASSIC, why)
    if facts.backport and create_only:
        return Choice(BACKPORT, f"only a create topic ({create_only[0].url}) is offered; "
                      "updates are found by polling", create_only[0])
    return Choice(POLLING, "the server's CapabilityStatement offers no Subscription create; "
                  "polling by _lastUpdated only")


def _choose_r5(facts: ServerFacts, override: str, pinned: Topic | None, full: list[Topic],
               create_only: list[Topic], resource: str) -> Choice:
    """FHIR R5: native topic-based Subscriptions on a SubscriptionTopic of the server."""
    topic = pinned or (full[0] if full else create_only[0] if create_only else None)
    if not facts.subscription_create:
        return Choice(POLLING, "R5 server without Subscription create; polling by "
                      "_lastUpdated only")
    if topic is None:
        return Choice(POLLING, f"R5 server with no SubscriptionTopic for {resource}; ask its "
                      "administrators for one that fires on create and update (or set topic); "
                      "polling meanwhile")
    if override == R5_TOPIC or pinned is not None:
        return Choice(R5_TOPIC, f"R5 topic-based Subscription on {topic.url} (chosen by "
                      "configuration)", topic)
    if topic in full:
        return Choice(R5_TOPIC, f"R5 server: native topic-based Subscription; SubscriptionTopic "
                      f"{topic.url} fires on {resource} create and update", topic)
    return Choice(R5_TOPIC, f"R5 server: only a create topic ({topic.url}) is offered; updates "
                  "are found by polling", topic)


def read_facts(client: FhirClient) -> ServerFacts:
    """Read the CapabilityStatement, SMART configuration and topic definitions."""
    capability = client.get("metadata").body
    if not isinstance(capability, dict) or capability.get("resourceType") != \
            "CapabilityStatement":
        raise PeerError(f"{client.base}/metadata is not a CapabilityStatement; is the base URL "
                        "right?", retryable=False)
    facts = from_capability(capability)
    smart = _try_get(client, ".well-known/smart-configuration")
    topics = {t.url: t for t in facts.topics}
    if facts.backport or facts.fhir_version.startswith("5."):
        for topic in read_topics(client, facts.fhir_version):
            topics[topic.url] = topic
    return ServerFacts(facts.fhir_version, facts.subscription_create, facts.backport,
                       tuple(topics.values()), smart or {})


def read_topics(client: FhirClient, fhir_version: str) -> list[Topic]:
    """SubscriptionTopic resources (R4B/R5) or Basic-wrapped topics (R4)."""
    if fhir_version.startswith("4.0"):
        bundle = _try_get(client, "Basic", [("code", TOPIC_CODE), ("_count", "200")])
        return [t for t in (from_basic(e.get("resource") or {})
                            for e in (bundle or {}).get("entry") or []) if t]
    bundle = _try_get(client, "SubscriptionTopic", [("_count", "200")])
    return [from_subscription_topic(e.get("resource") or {})
            for e in (bundle or {}).get("entry") or []
            if (e.get("resource") or {}).get("url")]


def from_basic(basic: dict[str, Any]) -> Topic | None:
    extensions = basic.get("extension") or []
    url = next((e.get("valueUri") or e.get("valueCanonical") for e in extensions
                if _topic_part(e) == "url"), None)
    if not url:
        return None
    resources: set[str] = set()
    interactions: set[str] = set()
    filters: set[str] = set()
    for ext in extensions:
        parts = ext.get("extension") or []
        if _topic_part(ext) == "resourceTrigger":
            for part in parts:
                if part.get("url") == "resource":
                    resources.add(str(part.get("valueUri", "")).rsplit("/", 1)[-1])
                if part.get("url") == "supportedInteraction":
                    interactions.add(str(part.get("valueCode")))
        if _topic_part(ext) == "canFilterBy":
            filters.update(str(p.get("valueString")) for p in parts
                           if p.get("url") == "filterParameter")
    return Topic(str(url), frozenset(resources), frozenset(interactions or {"create", "update"}),
                 frozenset(filters))


def _topic_part(extension: dict[str, Any]) -> str:
    """"resourceTrigger" of .../5.0/... or .../4.3/...extension-SubscriptionTopic.resourceTrigger
    (the IG's examples mix cross-version URLs)."""
    url = str(extension.get("url") or "")
    return url.rsplit("extension-SubscriptionTopic.", 1)[1] if \
        "/extension-SubscriptionTopic." in url else ""


def from_subscription_topic(topic: dict[str, Any]) -> Topic:
    resources: set[str] = set()
    interactions: set[str] = set()
    for trigger in topic.get("resourceTrigger") or []:
        resources.add(str(trigger.get("resource", "")).rsplit("/", 1)[-1])
        interactions.update(trigger.get("supportedInteraction") or ["create", "update"])
    filters = {str(f.get("filterParameter")) for f in topic.get("canFilterBy") or []}
    return Topic(str(topic["url"]), frozenset(resources), frozenset(interactions),
                 frozenset(filters))


def _try_get(client: FhirClient, path: str,
             params: list[tuple[str, str]] | None = None) -> dict[str, Any] | None:
    try:
        reply = client.send("GET", path, params=params, ok=(200,))
    except PeerError:
        return None
    return reply.body if isinstance(reply.body, dict) else None
