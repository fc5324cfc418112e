"""Typed configuration: `[[fhir_servers]]` (one table per EHR) and `[subscriptions]`.

```toml
[subscriptions]
max_body_bytes = 1048576
rate_limit = 2000          # per hook and web process; 0: off

[[fhir_servers]]
base_url = "https://ehr.example.org/fhir"
auth = "backend-services"            # or "none"
client_id = "refloop"
key_file = "keys/refloop-es384.pem"  # PEM private key; its public half is served as JWKS
key_id = "refloop-es384-1"
alg = "ES384"                         # or RS384
criteria = "ServiceRequest?intent=order"
categories = ["http://snomed.info/sct|3457005"]   # referral categories (system|code); [] = any
flavour = ""                          # "", r4-classic, r4-backport, r5-topic, polling
poll_interval = 300
```
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from referrals.errors import RefloopError

AUTH_CHOICES = ("none", "backend-services")
FLAVOURS = ("", "r4-classic", "r4-backport", "r5-topic", "polling")
HOOK_AUTH = ("header", "path")
ALGS = ("RS384", "ES384")
DEFAULT_CRITERIA = "ServiceRequest?intent=order"
#: SNOMED CT 3457005 "Patient referral": the ServiceRequest category of a referral
REFERRAL_CATEGORY = "http://snomed.info/sct|3457005"
CATEGORY_NAMES = {REFERRAL_CATEGORY: "patient referral"}


class ConfigError(RefloopError):
    """A `[[fhir_servers]]` or `[subscriptions]` entry is wrong; the message says which."""


@dataclass(frozen=True)
class FhirServer:
    base_url: str
    auth: str = "none"
    client_id: str = ""
    key_file: str = ""
    key_id: str = ""
    alg: str = "RS384"
    scope: str = "system/ServiceRequest.read system/Patient.read system/Practitioner.read " \
                 "system/PractitionerRole.read system/Organization.read system/Coverage.read " \
                 "system/Subscription.read system/Subscription.write system/Basic.read"
    token_url: str = ""
    criteria: str = DEFAULT_CRITERIA
    #: only ServiceRequests of one of these categories are referrals ("system|code" or "code");
    #: empty: every ServiceRequest the criteria match
    categories: tuple[str, ...] = (REFERRAL_CATEGORY,)
    flavour: str = ""
    topic: str = ""
    #: how the server proves it is the sender: "header" (our secret in the Subscription's
    #: header/parameter, the default) or "path" (the unguessable hook path alone, for servers
    #: that send no headers, such as HAPI FHIR 8.8 in R5 mode)
    hook_auth: str = "header"
    heartbeat_seconds: int = 300
    poll_interval: float = 300.0
    overlap_seconds: float = 180.0
    timeout: float = 10.0
    retries: int = 3
    activation_timeout: float = 30.0
    page_size: int = 100

    def __post_init__(self) -> None:
        # The categories become a `category` parameter of the criteria (a comma is FHIR's OR),
        # unless the criteria name categories themselves: the server filters where it can, and
        # Refloop checks the same parameter again on every ServiceRequest.
        categories = tuple(c.strip() for c in self.categories if c.strip())
        object.__setattr__(self, "categories", categories)
        if categories and not any(n.split(":")[0] == "category" for n, _ in
                                  _params(self.criteria)):
            joiner = "&" if "?" in self.criteria and not self.criteria.endswith("?") else \
                "" if self.criteria.endswith("?") else "?"
            object.__setattr__(self, "criteria",
                               f"{self.criteria}{joiner}category={','.join(categories)}")

    @property
    def base(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def criteria_type(self) -> str:
        return self.criteria.split("?", 1)[0]

    @property
    def criteria_params(self) -> list[tuple[str, str]]:
        return _params(self.criteria)


def _params(criteria: str) -> list[tuple[str, str]]:
    query = criteria.split("?", 1)[1] if "?" in criteria else ""
    pairs = [p.partition("=") for p in query.split("&") if p]
    return [(k, v) for k, _, v in pairs]


@dataclass(frozen=True)
class SubscriptionsConfig:
    max_body_bytes: int = 1024 * 1024
    max_json_depth: int = 200
    hook_cache_seconds: float = 30.0
    gap_grace_seconds: float = 30.0
    #: notifications per second per hook in each web process (0: no limit), and the burst
    rate_limit: float = 2000.0
    rate_burst: float = 2000.0
    #: after `subscriptions rotate-secret`, the previous secret is still accepted this long
    rotate_grace_seconds: float = 600.0


def parse_fhir_servers(raw: Any) -> list[FhirServer]:
    """`settings.section("fhir_servers")` -> typed entries; raises ConfigError with the fix."""
    if not raw:
        return []
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError("[[fhir_servers]] must be an array of tables")
    return [from_table(item, n) for n, item in enumerate(raw)]


def from_table(table: Any, index: int = 0) -> FhirServer:
    where = f"[[fhir_servers]] entry {index + 1}"
    if not isinstance(table, dict) or not table.get("base_url"):
        raise ConfigError(f"{where}: base_url is required")
    known = {f.name: f for f in fields(FhirServer)}
    unknown = set(table) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        kind = known[key].type
        if key == "categories":
            values[key] = _categories(value, where)
            continue
        try:
            values[key] = float(value) if kind == "float" else int(value) if kind == "int" \
                else str(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {key} = {value!r} is not a {kind}") from exc
    return check(FhirServer(**values), where)


def _categories(value: Any, where: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{where}: categories must be a list of \"system|code\" strings")
    return tuple(items)


def check(server: FhirServer, where: str) -> FhirServer:
    if not server.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: base_url must start with http:// or https://")
    if server.auth not in AUTH_CHOICES:
        raise ConfigError(f"{where}: auth must be one of {AUTH_CHOICES}")
    if server.flavour not in FLAVOURS:
        raise ConfigError(f"{where}: flavour must be one of {FLAVOURS}")
    if server.hook_auth not in HOOK_AUTH:
        raise ConfigError(f"{where}: hook_auth must be one of {HOOK_AUTH}")
    if server.alg not in ALGS:
        raise ConfigError(f"{where}: alg must be RS384 or ES384")
    if "?" not in server.criteria and server.criteria != "ServiceRequest":
        raise ConfigError(f"{where}: criteria must look like ServiceRequest?param=value")
    if server.auth == "backend-services":
        if not server.client_id or not server.key_file:
            raise ConfigError(f"{where}: auth = backend-services needs client_id and key_file")
        if not Path(server.key_file).exists():
            raise ConfigError(f"{where}: key_file {server.key_file} does not exist")
    return server


def parse_subscriptions_config(raw: Any) -> SubscriptionsConfig:
    if not raw:
        return SubscriptionsConfig()
    if not isinstance(raw, dict):
        raise ConfigError("[subscriptions] must be a table")
    config = SubscriptionsConfig()
    known = {f.name: f for f in fields(SubscriptionsConfig)}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"[subscriptions]: unknown key {key!r}; known: {sorted(known)}")
        try:
            number: Any = float(value) if known[key].type == "float" else int(value)
            config = replace(config, **{key: number})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[subscriptions]: {key} = {value!r} is not a number") from exc
    return config


def server_for(servers: list[FhirServer], base_url: str, auth: str | None = None) -> FhirServer:
    """The configured entry for `base_url`, or a plain one (auth none) for an unconfigured URL."""
    base = base_url.rstrip("/")
    for server in servers:
        if server.base == base:
            return server if auth in (None, server.auth) else check(replace(server, auth=auth),
                                                                    base)
    return check(FhirServer(base_url=base, auth=auth or "none"), base)
