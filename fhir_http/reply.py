"""A server's answer as the adapters read it, and what is said of it to people and in logs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

FHIR_JSON = "application/fhir+json"


@dataclass
class Reply:
    """One HTTP answer: its status, its JSON (None when it has none) and headers; `text` holds a
    body that is not a JSON object (an HTML error page, an ndjson file)."""

    status: int
    body: Any
    headers: dict[str, str]
    text: str = ""

    @property
    def etag(self) -> str:
        return self.headers.get("ETag") or self.headers.get("etag") or ""

    @property
    def version(self) -> str:
        """The resource version from the ETag (W/"3" -> 3) or from meta.versionId."""
        tag = self.etag.removeprefix("W/").strip('"')
        if tag:
            return tag
        if isinstance(self.body, dict):
            return str((self.body.get("meta") or {}).get("versionId") or "")
        return ""


def diagnostics(body: Any) -> str:
    """What an OperationOutcome (or an OAuth error answer) says, for an error message."""
    if isinstance(body, dict):
        texts = [str(i.get("diagnostics") or i.get("code") or "")
                 for i in body.get("issue") or [] if isinstance(i, dict)]
        if texts:
            return "; ".join(texts)[:500]
        if body.get("error"):
            return f"{body.get('error')}: {body.get('error_description', '')}"[:500]
    return "(no OperationOutcome)"


def safe_url(url: str) -> str:
    """The URL without its query string (search parameters may carry patient data)."""
    return url.split("?", 1)[0]


#: how U+0000 and surrogates look in JSON text (a fast test before walking the value)
UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_UNPAIRED = re.compile(r"[\ud800-\udfff]")


def without_unstorable(value: Any) -> Any:
    """`value` with U+0000 left out of every string and unpaired surrogates replaced by
    U+FFFD. FHIR strings may hold neither, and PostgreSQL can store neither in JSON (SQLite
    would keep them): a resource that carries one is kept the same on both databases."""
    if isinstance(value, str):
        text = value.replace("\x00", "")
        return _UNPAIRED.sub("\ufffd", text)
    if isinstance(value, list):
        return [without_unstorable(item) for item in value]
    if isinstance(value, dict):
        return {without_unstorable(k): without_unstorable(v) for k, v in value.items()}
    return value
