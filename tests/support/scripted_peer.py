"""A FHIR server's answers, scripted, behind requests' own transport interface: the client under
test runs its real code (sessions, headers, retries, JSON decoding) and only the socket is
replaced. For tests of the HTTP client itself; adapters' flows run against sekmet-fhir."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

#: one scripted answer: a status, (status, JSON body or raw bytes[, headers]), or an exception
Answer = int | tuple[Any, ...] | Exception


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | str | None
    timeout: Any


@dataclass
class ScriptedPeer(BaseAdapter):
    answers: list[Answer] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def send(self, request: requests.PreparedRequest, stream: bool = False,  # type: ignore[override]
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        self.sent.append(Sent(str(request.method), str(request.url), dict(request.headers),
                              request.body, timeout))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        status, body, headers = (answer, None, {}) if isinstance(answer, int) else \
            (*answer, {})[:3]
        response = requests.Response()
        response.status_code = status
        response._content = body if isinstance(body, bytes) else \
            (json.dumps(body).encode() if body is not None else b"")
        response.headers = CaseInsensitiveDict(headers)
        response.url, response.request, response.encoding = str(request.url), request, "utf-8"
        return response

    def close(self) -> None:
        pass


def install(monkeypatch: pytest.MonkeyPatch, *answers: Answer) -> ScriptedPeer:
    """Every requests session (also requests.request's) talks to one scripted peer."""
    peer = ScriptedPeer(list(answers))
    monkeypatch.setattr(requests.Session, "get_adapter", lambda self, url: peer)
    return peer
