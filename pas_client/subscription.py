"""The organisation-level PAS Subscription we create at each payer (R5 backport, rest-hook,
full-resource, the PAS topic, filtered by our organisation identifier)."""

from __future__ import annotations

from typing import Any

from pas_client.config import PayerConfig

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "http://hl7.org/fhir/us/davinci-pas/SubscriptionTopic/PASSubscriptionTopic"
PROFILE = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-subscription"


def build_subscription(payer: PayerConfig, endpoint: str, header: str) -> dict[str, Any]:
    filter_value = f"{payer.subscription_filter}={payer.organization_identifier}"
    subscription: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [PROFILE]} if payer.version != "2.0.1" else {},
        "status": "requested",
        "reason": "Prior authorization decisions for our organisation",
        "criteria": TOPIC,
        "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                     "valueString": filter_value}]},
        "channel": {"type": "rest-hook", "endpoint": endpoint,
                    "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content",
                                                "valueCode": "full-resource"}]},
                    "header": [header]},
    }
    if not subscription["meta"]:
        del subscription["meta"]
    return subscription
