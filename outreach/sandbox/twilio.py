"""THE TWILIO SANDBOX: a fake SMS and voice gateway for the demo and the tests, because the real
gateway cannot run here. It is not Twilio and says so in every answer's `X-Sandbox` header.

It accepts the REST calls the official `twilio` library makes (Messages and Calls: create, list,
fetch; HTTP Basic with the account SID and auth token; Twilio's error bodies and codes), and it
calls back the way Twilio does: status callbacks (sent, delivered or undelivered with an error
code), the call's TwiML fetch, key presses to the Gather action, and patient replies to the
inbound webhook, each signed with X-Twilio-Signature exactly as Twilio signs (HMAC-SHA1 over the
URL and the sorted form fields, base64), computed here independently of the library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from xml.etree import ElementTree

import phonenumbers
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

log = logging.getLogger("refloop.outreach.sandbox")
API = "/2010-04-01/Accounts/"


@dataclass
class SandboxRules:
    #: numbers whose messages end undelivered with this error code (30003 unreachable, 30006
    #: landline, 30005 unknown number)
    undeliverable: dict[str, str] = field(default_factory=dict)
    #: numbers refused at create time with this code (21211 invalid, 21610 opted out)
    refused: dict[str, str] = field(default_factory=dict)
    #: answer the next N creates with HTTP 500 (to test retries)
    fail_next: int = 0
    #: seconds between the create and the first status callback
    callback_delay: float = 0.0
    #: mimic Twilio's own STOP handling (block the number and answer 21610 afterwards)
    block_after_stop: bool = False
    #: where simulated patient replies go (our inbound SMS webhook)
    inbound_url: str = ""
    #: the number patients reply to
    number: str = "+15005550006"
    #: post status callbacks (benchmarks without a web server turn them off)
    send_callbacks: bool = True
    #: a slow gateway: seconds to wait before answering each next REST request of a kind
    #: ("create", "list"), one entry per request; a create is taken before the wait
    delays: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Record:
    sid: str
    kind: str  # message | call
    to: str
    from_: str
    body: str
    status: str
    callback: str
    created: datetime
    url: str = ""
    twiml: str = ""
    error_code: str = ""
    events: list[str] = field(default_factory=list)
    #: time.monotonic() when the create request arrived (latency measurements)
    arrived: float = field(default_factory=time.monotonic)

    def to_json(self, account: str) -> dict[str, Any]:
        stamp = format_datetime(self.created)
        common = {"sid": self.sid, "account_sid": account, "to": self.to, "from": self.from_,
                  "status": self.status, "date_created": stamp, "date_updated": stamp,
                  "api_version": "2010-04-01"}
        if self.kind == "message":
            return {**common, "body": self.body, "date_sent": stamp,
                    "direction": "outbound-api", "num_segments": "1", "num_media": "0",
                    "error_code": int(self.error_code) if self.error_code else None,
                    "error_message": None, "messaging_service_sid": None, "price": None,
                    "price_unit": "USD", "uri": f"{API}{account}/Messages/{self.sid}.json",
                    "subresource_uris": {}}
        return {**common, "direction": "outbound-api", "start_time": stamp,
                "uri": f"{API}{account}/Calls/{self.sid}.json", "subresource_uris": {}}


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature as Twilio computes it."""
    data = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class TwilioSandbox:
    """Start with .start(); .url is the REST base to configure as [outreach.twilio]
    api_base_url."""

    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "sandbox-token",
                 rules: SandboxRules | None = None, port: int = 0) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.rules = rules or SandboxRules()
        #: the gateway's time (date_created); a test on a fake clock shares it
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.records: list[Record] = []
        self.blocked: set[str] = set()
        self.delivered_callbacks: list[tuple[str, dict[str, str], int]] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[float, str, dict[str, str]] | None] = queue.Queue()
        self._server = make_server("127.0.0.1", port, self._wsgi, threaded=True,
                                   request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._threads: list[threading.Thread] = []

    # -- life --------------------------------------------------------------------------------

    def start(self) -> TwilioSandbox:
        for target in (self._server.serve_forever, self._post_callbacks):
            thread = threading.Thread(target=target, daemon=True, name="twilio-sandbox")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._server.shutdown()
        self._server.server_close()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every queued callback was posted (answered by the receiver); False when
        some were still pending after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    # -- the simulated patient ---------------------------------------------------------------

    def messages(self, to: str | None = None) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.kind == "message" and (to is None or r.to == to)]

    def calls(self, to: str | None = None) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.kind == "call" and (to is None or r.to == to)]

    def reply(self, from_: str, body: str, url: str | None = None) -> int:
        """A patient's text to our number, posted (signed) to the inbound webhook now."""
        target = url or self.rules.inbound_url
        if self.rules.block_after_stop and body.strip().upper() in {"STOP", "STOPALL", "END",
                                                                    "QUIT", "CANCEL",
                                                                    "UNSUBSCRIBE"}:
            self.blocked.add(from_)
        params = {"MessageSid": _sid("SM"), "SmsSid": "", "AccountSid": self.account_sid,
                  "From": from_, "To": self.rules.number, "Body": body, "NumMedia": "0",
                  "NumSegments": "1", "ApiVersion": "2010-04-01"}
        params["SmsSid"] = params["MessageSid"]
        return self._post(target, params)

    def press(self, call_sid: str, digits: str) -> str:
        """The callee presses keys: posted (signed) to the call's Gather action; returns the
        TwiML our server answered with."""
        call = next(r for r in self.calls() if r.sid == call_sid)
        action = _gather_action(call.twiml)
        params = {"CallSid": call.sid, "AccountSid": self.account_sid, "From": call.from_,
                  "To": call.to, "CallStatus": "in-progress", "Direction": "outbound-api",
                  "Digits": digits, "ApiVersion": "2010-04-01"}
        response = requests.post(action, data=params, timeout=10, headers={
            "X-Twilio-Signature": twilio_signature(self.auth_token, action, params)})
        return response.text

    # -- the REST API ------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._route(request)
        response.headers["X-Sandbox"] = "Refloop Twilio sandbox (a fake gateway)"
        return response(environ, start_response)

    def _route(self, request: Request) -> Response:
        if request.path.startswith("/_sandbox/"):
            return self._control(request)
        found = re.fullmatch(rf"{API}(\w+)/(Messages|Calls)(?:/(\w+))?\.json", request.path)
        if not found:
            return _error(404, 20404, "The requested resource was not found")
        if not self._authorised(request, found.group(1)):
            return _error(401, 20003, "Authenticate")
        kind = "message" if found.group(2) == "Messages" else "call"
        if request.method == "POST" and not found.group(3):
            created = self._create(kind, request)
            self._slow("create")
            return created
        if request.method == "GET" and found.group(3):
            match = [r for r in self.records if r.sid == found.group(3)]
            if not match:
                return _error(404, 20404, "The requested resource was not found")
            return _json(match[0].to_json(self.account_sid))
        if request.method == "GET":
            self._slow("list")
            to = request.args.get("To")
            size = int(request.args.get("PageSize", "50"))
            with self._lock:
                rows = [r for r in reversed(self.records) if r.kind == kind
                        and (to is None or r.to == to)][:size]
            key = "messages" if kind == "message" else "calls"
            return _json({key: [r.to_json(self.account_sid) for r in rows], "end": len(rows),
                          "first_page_uri": request.full_path, "next_page_uri": None,
                          "page": 0, "page_size": size, "previous_page_uri": None, "start": 0,
                          "uri": request.full_path})
        return _error(405, 20004, "Method not allowed")

    def _slow(self, kind: str) -> None:
        with self._lock:
            waits = self.rules.delays.get(kind)
            delay = waits.pop(0) if waits else 0.0
        if delay:
            time.sleep(delay)

    def _authorised(self, request: Request, account: str) -> bool:
        auth = request.authorization
        return bool(auth and account == self.account_sid and auth.username == self.account_sid
                    and hmac.compare_digest(auth.password or "", self.auth_token))

    def _create(self, kind: str, request: Request) -> Response:
        form = request.form
        to, callback = form.get("To", ""), form.get("StatusCallback", "")
        sender = form.get("From") or form.get("MessagingServiceSid") or ""
        if self.rules.fail_next > 0:
            self.rules.fail_next -= 1
            return _error(500, 20500, "Internal Server Error (sandbox: a failure on request)")
        if not sender:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not _valid(to):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to in self.rules.refused:
            code = self.rules.refused[to]
            return _error(400, int(code), f"Sandbox refuses {to} with error {code}")
        if kind == "message" and to in self.blocked:
            return _error(400, 21610, "Attempt to send to unsubscribed recipient")
        record = Record(_sid("SM" if kind == "message" else "CA"), kind, to, sender,
                        form.get("Body", ""), "queued", callback, self.clock(),
                        url=form.get("Url", ""))
        with self._lock:
            self.records.append(record)
        if not self.rules.send_callbacks:
            pass
        elif kind == "message":
            self._plan_message_callbacks(record)
        else:
            self._queue.put((self.rules.callback_delay, "call", {"sid": record.sid}))
        return _json(record.to_json(self.account_sid), status=201)

    def _plan_message_callbacks(self, record: Record) -> None:
        code = self.rules.undeliverable.get(record.to, "")
        steps = ["sent", "undelivered" if code else "delivered"]
        for n, step in enumerate(steps):
            self._queue.put((self.rules.callback_delay if n == 0 else 0.0, "message",
                             {"sid": record.sid, "status": step, "code": code
                              if step == "undelivered" else ""}))

    def _control(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        if request.path == "/_sandbox/reply" and request.method == "POST":
            return _json({"status": self.reply(body["from"], body["body"], body.get("url"))})
        if request.path == "/_sandbox/press" and request.method == "POST":
            return _json({"twiml": self.press(body["call_sid"], body["digits"])})
        if request.path == "/_sandbox/records":
            return _json([{**r.to_json(self.account_sid), "kind": r.kind, "twiml": r.twiml}
                          for r in self.records])
        return _error(404, 20404, "no such sandbox control")

    # -- callbacks ---------------------------------------------------------------------------

    def _post_callbacks(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                self._queue.task_done()
                return
            delay, kind, data = job
            try:
                if delay:
                    time.sleep(delay)
                if kind == "message":
                    self._message_callback(data)
                else:
                    self._call_flow(data["sid"])
            except Exception:
                log.exception("sandbox callback failed")
            finally:
                self._queue.task_done()

    def _message_callback(self, data: dict[str, str]) -> None:
        record = next(r for r in self.records if r.sid == data["sid"])
        record.status = data["status"]
        record.error_code = data["code"]
        record.events.append(data["status"])
        if not record.callback:
            return
        params = {"MessageSid": record.sid, "SmsSid": record.sid,
                  "MessageStatus": data["status"], "SmsStatus": data["status"],
                  "AccountSid": self.account_sid, "From": record.from_, "To": record.to,
                  "ApiVersion": "2010-04-01"}
        if data["code"]:
            params["ErrorCode"] = data["code"]
        if data["status"] in ("delivered", "undelivered"):
            params["RawDlrDoneDate"] = datetime.now(UTC).strftime("%y%m%d%H%M")
        self._post(record.callback, params)

    def _call_flow(self, sid: str) -> None:
        call = next(r for r in self.records if r.sid == sid)
        base = {"CallSid": sid, "AccountSid": self.account_sid, "From": call.from_,
                "To": call.to, "Direction": "outbound-api", "ApiVersion": "2010-04-01"}
        for status in ("initiated", "ringing"):
            self._call_status(call, base, status)
        code = self.rules.undeliverable.get(call.to, "")
        if code:
            self._call_status(call, base, "no-answer")
            return
        call.status = "in-progress"
        response = requests.post(call.url, data={**base, "CallStatus": "in-progress"},
                                 timeout=10, headers={"X-Twilio-Signature": twilio_signature(
                                     self.auth_token, call.url,
                                     {**base, "CallStatus": "in-progress"})})
        call.twiml = response.text if response.ok else ""
        call.events.append(f"twiml {response.status_code}")
        self._call_status(call, base, "completed")

    def _call_status(self, call: Record, base: dict[str, str], status: str) -> None:
        call.status = status
        call.events.append(status)
        if call.callback:
            self._post(call.callback, {**base, "CallStatus": status})

    def _post(self, url: str, params: dict[str, str]) -> int:
        signature = twilio_signature(self.auth_token, url, params)
        for attempt in range(3):
            try:  # Twilio waits 15 s for a webhook's answer
                response = requests.post(url, data=params, timeout=15,
                                         headers={"X-Twilio-Signature": signature})
                self.delivered_callbacks.append((url, params, response.status_code))
                if response.status_code < 500:
                    return response.status_code
            except requests.RequestException:
                pass
            time.sleep(0.2 * (attempt + 1))
        self.delivered_callbacks.append((url, params, 0))
        return 0


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request (the demo's report and benchmarks stay readable)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _gather_action(twiml: str) -> str:
    root = ElementTree.fromstring(twiml)
    gather = root.find("Gather")
    if gather is None or not gather.get("action"):
        raise ValueError("the call's TwiML has no Gather with an action")
    return str(gather.get("action"))


def _valid(number: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return False


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


def _error(status: int, code: int, message: str) -> Response:
    return _json({"code": code, "message": message, "status": status,
                  "more_info": f"https://www.twilio.com/docs/errors/{code}"}, status=status)
