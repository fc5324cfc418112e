"""Complete, buffered requests handed to a WSGI application on a worker thread."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from refloop.edge.messages import Answer, Head

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: headers a WSGI application sees as CONTENT_TYPE / CONTENT_LENGTH, not HTTP_*
_CONTENT = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
#: hop-by-hop headers of the application's answer the edge sets itself
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


#: set (to the body limit in bytes) when the body was over the limit: the request carries only
#: its first part, and the application must refuse it (refloop/oversized.py)
OVERSIZED = "refloop.oversized"
#: set (to the request deadline in seconds) when the deadline cut the body short: the request
#: carries what arrived (its first part), and the application must refuse it (same module)
TIMED_OUT = "refloop.timed_out"


def build_environ(head: Head, body: bytes, server: tuple[str, int]) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": head.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(head.raw_path).decode("latin-1"),
        "QUERY_STRING": head.query.decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{head.version}",
        "REMOTE_ADDR": head.peer[0],
        "REMOTE_PORT": str(head.peer[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in head.headers.items():
        if "_" in name:  # would collide with another header once upper-cased: dropped
            continue
        if name in _CONTENT:
            continue
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    if "content-type" in head.headers:
        environ["CONTENT_TYPE"] = head.headers["content-type"]
    if body or head.has_body:
        environ["CONTENT_LENGTH"] = str(len(body))  # the length read (chunked or not)
    return environ


def run_wsgi(app: WSGIApp, environ: dict[str, Any]) -> Answer:
    """Call the application and collect its whole answer (on a worker thread)."""
    started: list[Any] = []
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return written.append

    result = app(environ, start_response)
    try:
        for chunk in result:
            if chunk:
                written.append(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the WSGI application did not call start_response")
    status, headers = started
    # a HEAD answer keeps the application's Content-Length: the length GET would send
    hop = _HOP - {"content-length"} if environ["REQUEST_METHOD"] == "HEAD" else _HOP
    kept = tuple((str(n), str(v)) for n, v in headers if n.lower() not in hop)
    body = b"" if hop is not _HOP else b"".join(written)  # HEAD: never a body
    return Answer(int(str(status)[:3]), body, kept, None)
