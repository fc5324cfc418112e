"""The outreach webhooks: Twilio's inbound SMS, status callbacks, the call's TwiML and its key
presses, and the email one-click unsubscribe.

Every Twilio request is checked with the library's validator over the public URL Twilio called
(`public_base_url`, never the Host header); a request without a valid signature gets 403 and is
stored nowhere. A valid one is stored in the inbox (with its processing work item) before the
2xx. The unsubscribe link carries an opaque, authenticated token instead (RFC 8058: no cookie,
no login).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, request

from outreach import tokens
from outreach.channels.twilio import call_twiml, empty_twiml, key_twiml, signature_valid
from outreach.runtime import Runtime
from outreach.templates import voice_keys

log = logging.getLogger("refloop.outreach")
XML = "text/xml; charset=utf-8"


def outreach_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("outreach", __name__, url_prefix="/outreach")

    def signed() -> bool:
        request.get_data(cache=True)  # keep the raw body for the inbox; the form parses a copy
        url = rt.base_url + request.path
        if request.query_string:
            url += "?" + request.query_string.decode("latin-1")
        ok = signature_valid(rt.config.twilio.auth_token, url, request.form,
                             request.headers.get("X-Twilio-Signature", ""))
        if not ok:
            log.warning("twilio webhook refused: bad signature", extra={"path": request.path})
        return ok

    def refused() -> Response:
        return Response("invalid or missing X-Twilio-Signature\n", status=403,
                        mimetype="text/plain")

    def store(channel: str, dedupe: str | None, work_kind: str,
              payload: dict[str, Any] | None = None) -> None:
        rt.inbox.accept(channel, "twilio", request.get_data(), work_kind=work_kind,
                        content_type=request.content_type or "",
                        headers={"path": request.path}, dedupe_key=dedupe,
                        work_payload=payload)

    @bp.post("/twilio/sms")
    def inbound_sms() -> Response:
        if not signed():
            return refused()
        sid = request.form.get("MessageSid") or request.form.get("SmsSid") or ""
        store("twilio-sms", f"twilio-sms:{sid}" if sid else None, "outreach.inbound")
        return Response(empty_twiml(), mimetype=XML)

    @bp.post("/twilio/status")
    def status() -> Response:
        if not signed():
            return refused()
        sid = request.form.get("MessageSid") or request.form.get("CallSid") or ""
        state = request.form.get("MessageStatus") or request.form.get("CallStatus") or ""
        store("twilio-status", f"twilio-status:{sid}:{state}" if sid else None,
              "outreach.status", {"m": request.args.get("m", "")})
        return Response("", status=204)

    @bp.post("/twilio/voice/<message_id>")
    def voice(message_id: str) -> Response:
        if not signed():
            return refused()
        message = rt.ostore.message(message_id)
        if message is None or message.channel != "voice":
            return Response(key_twiml("", "en", ""), mimetype=XML)
        script = message.body.replace(voice_keys(message.language), "").strip()
        action = f"{rt.base_url}/outreach/twilio/voice/{message_id}/keys"
        return Response(call_twiml(script, voice_keys(message.language), message.language,
                                   action), mimetype=XML)

    @bp.post("/twilio/voice/<message_id>/keys")
    def keys(message_id: str) -> Response:
        if not signed():
            return refused()
        digit = request.form.get("Digits", "")[:1]
        call = request.form.get("CallSid", "")
        store("twilio-voice", f"twilio-keys:{call}:{digit}" if call else None,
              "outreach.inbound", {"m": message_id})
        message = rt.ostore.message(message_id)
        if message is None or message.channel != "voice":  # no call of ours: promise nothing
            return Response(key_twiml("", "en", ""), mimetype=XML)
        return Response(key_twiml(digit, message.language, rt.config.coordinator_line),
                        mimetype=XML)

    @bp.get("/unsubscribe/<token>", merge_slashes=False)
    def unsubscribe_page(token: str) -> Response:
        if tokens.read(rt.secret, token) is None:
            return unsubscribe_error_page(404)
        return _page("Stop these emails?", "<form method=\"post\"><input type=\"hidden\" "
                     "name=\"List-Unsubscribe\" value=\"One-Click\"><button type=\"submit\">"
                     "Unsubscribe</button></form>", 200, raw=True)

    @bp.post("/unsubscribe/<token>", merge_slashes=False)
    def unsubscribe(token: str) -> Response:
        if tokens.read(rt.secret, token) is None:
            return unsubscribe_error_page(404)
        rt.inbox.accept("email-unsubscribe", "email-link", f"token={token}".encode(),
                        work_kind="outreach.inbound",
                        content_type="application/x-www-form-urlencoded")
        return _page("Unsubscribed", f"You will get no more emails from "
                     f"{rt.config.practice_name}.", 200)

    return bp


def unsubscribe_error_page(status: int) -> Response:
    """An unknown token, or a path under /outreach/unsubscribe that no route answers; a request
    over the web server's size limit (413) is told that nothing was sent."""
    if status == 413:
        return _page("Too much to send", "Nothing was sent. Go back and try again, or reply "
                     "STOP to a text to stop messages.", status)
    return _page("Link not valid", "This unsubscribe link is not valid. Reply STOP to a text, "
                 "or call us, to stop messages.", status)


def _page(title: str, body: str, status: int, *, raw: bool = False) -> Response:
    from html import escape

    text = body if raw else f"<p>{escape(body)}</p>"
    html = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
            f"{escape(title)}</title></head><body><main><h1>{escape(title)}</h1>{text}"
            "</main></body></html>")
    return Response(html, status=status, mimetype="text/html", headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
