"""The hook endpoint as a route of the HTTP edge (`refloop serve`'s web server, refloop/edge).

The edge reads each request itself, asynchronously, and calls this route at two moments:

- `begin(head)` once the request line and headers are in: an unknown hook, a wrong secret or an
  exhausted rate limit is answered at once (401, 429), before any byte of the body is read;
  otherwise an `Upload` says how many body bytes the edge may take;
- then `Upload.complete(body)` with the whole body, or `Upload.abandon(partial, problem)` when
  the body never arrived whole (the client closed early, the chunked framing was bad, the
  request deadline passed, or it is larger than max_body_bytes): nothing is acknowledged and
  what arrived is kept in quarantine.

`complete` answers a bad body at once and otherwise queues the notification on the process's group
commit (batched_inbox.ThreadWriter), returning a future settled with the answer after the commit.
The head and the answers are plain objects (the attributes below), so this module does not
depend on the edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from referrals.store.inbox import Accepted
from subscriptions.batched_inbox import ThreadWriter
from subscriptions.endpoint import (
    METHODS,
    PATH_RULE,
    ROOT_RULE,
    HookEndpoint,
    Prepared,
    Reply,
)
from subscriptions.registry import Hook

PREFIX = "/hooks/"


class Head(Protocol):
    """What the edge knows of a request when its headers are in."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...  # lower-case names


def parse_hook_path(path: str) -> tuple[str, str, str] | None:
    """(hook id, subpath, route pattern) of a regular hook URL path; None for anything else."""
    if not path.startswith(PREFIX) or "//" in path:
        return None
    hook_id, _, subpath = path[len(PREFIX):].partition("/")
    if not hook_id:
        return None
    if not subpath:  # "/hooks/<id>" and "/hooks/<id>/"
        return hook_id, "", ROOT_RULE
    return hook_id, subpath, PATH_RULE


@dataclass
class HookUpload:
    endpoint: HookEndpoint
    writer: ThreadWriter
    hook: Hook
    method: str
    subpath: str
    headers: Mapping[str, str]
    route: str

    @property
    def max_bytes(self) -> int:
        return self.endpoint.max_body_bytes

    def complete(self, body: bytes) -> Reply | asyncio.Future[Reply]:
        prepared = self.endpoint.prepare(self.hook, self.method, self.subpath, self.headers,
                                         body)
        if isinstance(prepared, Reply):
            return prepared
        stored = self.writer.submit(prepared.message, prepared.health)
        answer: asyncio.Future[Reply] = self.writer.loop.create_future()
        stored.add_done_callback(lambda done: answer.set_result(
            self._after_commit(done, prepared, body)))
        return answer

    def abandon(self, partial: bytes, problem: str) -> Reply:
        return self.endpoint.incomplete(self.hook, self.headers, partial, problem)

    def _after_commit(self, done: asyncio.Future[Accepted], prepared: Prepared,
                      body: bytes) -> Reply:
        error = done.exception()
        if error is not None:
            return self.endpoint.fail(self.hook, self.headers, body, error)
        return prepared.reply


class HookRoute:
    """The edge route for `/hooks/`: anything else under the prefix (other methods, empty
    segments) is left to the WSGI application (Flask answers 405, 404, 308)."""

    prefix = PREFIX

    def __init__(self, endpoint: HookEndpoint) -> None:
        self.endpoint = endpoint
        self._methods = frozenset(METHODS)
        self._writers: dict[asyncio.AbstractEventLoop, ThreadWriter] = {}

    def begin(self, head: Head) -> Reply | HookUpload | None:
        """None: not a regular hook URL (the WSGI application answers it)."""
        route = parse_hook_path(head.path)
        if head.method not in self._methods or route is None:
            return None
        hook_id, subpath, pattern = route
        admitted = self.endpoint.admit(hook_id, head.headers.get("authorization", ""))
        if isinstance(admitted, Reply):
            return admitted
        return HookUpload(self.endpoint, self._writer(), admitted, head.method, subpath,
                          head.headers, pattern)

    def pattern(self, head: Head) -> str:
        route = parse_hook_path(head.path)
        return route[2] if route else ROOT_RULE

    def _writer(self) -> ThreadWriter:
        loop = asyncio.get_running_loop()
        writer = self._writers.get(loop)
        if writer is None:
            writer = self._writers[loop] = ThreadWriter(self.endpoint.writer, loop)
        return writer
