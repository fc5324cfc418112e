"""The outreach part of `refloop demo`: referrals detected for three patients, the first SMS
handed to THE TWILIO SANDBOX (a fake gateway) within seconds for a patient whose local time is
inside the calling window, deferred with the quiet-hours reason for one whose local time is not
(the two zones are chosen from the current time so both cases always appear), and a STOP from
the third patient honoured before the next message. Mail goes to a local SMTP server (aiosmtpd).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from datetime import time as clock_time
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from werkzeug.serving import make_server

from outreach.config import from_settings
from outreach.engine import on_transition
from outreach.runtime import Runtime
from outreach.sandbox import MailCapture, SandboxRules, TwilioSandbox
from referrals.ids import short_id
from referrals.model import Actor, Command, Referral, new_referral_id
from referrals.worker import Worker

DEMO_SERVER = "demo"
#: zones with whole-hour offsets around the world, US ones first
ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
         "America/Anchorage", "Pacific/Honolulu", "America/Puerto_Rico", "Pacific/Guam",
         "Europe/London", "Europe/Madrid", "Asia/Dubai", "Asia/Kolkata", "Asia/Bangkok",
         "Asia/Tokyo", "Pacific/Auckland", "America/Sao_Paulo", "Atlantic/Azores")
PATIENTS = (("demo-outreach-ana", "Ana", "+12125550142", "es"),
            ("demo-outreach-kai", "Kai", "+18085550143", "en"),
            ("demo-outreach-lee", "Lee", "+13125550144", "en"))
LISTENER = Actor("Device/refloop-demo", "Demo loader")


def choose_zones(now: datetime) -> tuple[str, str]:
    """A zone where `now` is well inside 08:00-21:00 and one where it is outside."""
    def local(zone: str) -> clock_time:
        return now.astimezone(ZoneInfo(zone)).time()

    day = next(z for z in ZONES if clock_time(9, 0) <= local(z) < clock_time(20, 0))
    night = next(z for z in ZONES if not clock_time(8, 0) <= local(z) < clock_time(21, 0))
    return day, night


def run_demo(services: Any, make_runtime: Callable[..., Runtime],
             echo: Callable[[str], None], *, make_app: Callable[[], Any],
             handlers: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`make_app` builds Refloop's web application and `handlers` the outreach work handlers
    (both from refloop/wiring, which this adapter never imports)."""
    twilio = TwilioSandbox(rules=SandboxRules()).start()
    mail = MailCapture().start()
    server = make_server("127.0.0.1", 0, _Late(), threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    twilio.rules.inbound_url = f"{base}/outreach/twilio/sms"
    config = from_settings({
        "enabled": True, "start_on": "detected", "practice_name": "Refloop Demo Clinic",
        "practice_phone": "+15555550100", "public_base_url": base,
        "twilio": {"account_sid": twilio.account_sid, "auth_token": twilio.auth_token,
                   "from_number": twilio.rules.number, "api_base_url": twilio.url},
        "smtp": {"host": "127.0.0.1", "port": mail.port, "security": "none",
                 "from_address": "clinic@refloop.demo"}},
        services.settings.var_dir, base)
    rt = make_runtime(services, config)
    previous = services.adapters.get("outreach")
    services.adapters["outreach"] = rt

    def listener(conn: Any, change: Any) -> None:
        on_transition(rt, conn, change)

    services.referrals.listeners.append(listener)
    server.app.inner = make_app()  # type: ignore[attr-defined]
    stop = threading.Event()
    worker = Worker(services.work, handlers())
    threads = [threading.Thread(target=server.serve_forever, daemon=True),
               threading.Thread(target=worker.run, args=(stop, 0.05), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        return _show(services, rt, twilio, echo)
    finally:
        stop.set()
        threads[1].join(timeout=10)
        server.shutdown()
        server.server_close()
        services.referrals.listeners.remove(listener)
        if previous is not None:
            services.adapters["outreach"] = previous
        twilio.stop()
        mail.stop()


def _show(services: Any, rt: Runtime, twilio: TwilioSandbox,
          echo: Callable[[str], None]) -> dict[str, Any]:
    now = datetime.now(UTC)
    day, night = choose_zones(now)
    zones = {PATIENTS[0][0]: day, PATIENTS[1][0]: night, PATIENTS[2][0]: day}
    echo("\nPatient outreach (THE TWILIO SANDBOX, a fake SMS gateway; mail to a local SMTP "
         "server):")
    timings: list[float] = []
    referrals: dict[str, Referral] = {}
    for pid, name, phone, language in PATIENTS:
        _store_patient(services, pid, name, phone, language, zones[pid])
        started = time.monotonic()
        referral = _detect(services, pid)
        referrals[pid] = referral
        local = now.astimezone(ZoneInfo(zones[pid]))
        sent = _wait(partial(twilio.messages, phone), 10.0)
        if sent:
            elapsed = time.monotonic() - started
            timings.append(elapsed)
            echo(f"  {name} ({zones[pid]}, {local:%H:%M} local): referral {short_id(referral.id)} "
                 f"detected, first SMS handed to the gateway after {elapsed:.2f} s\n"
                 f"      \"{sent[0].body}\"")
            continue
        deferred = _wait(partial(_deferred, rt, referral.id), 10.0)
        why = f"[{deferred[0].rule}] {deferred[0].reason}" if deferred else "no decision yet"
        echo(f"  {name} ({zones[pid]}, {local:%H:%M} local): referral {short_id(referral.id)} "
             f"detected, first SMS deferred {why}")
    stopper = PATIENTS[2]
    twilio.reply(stopper[2], "Stop texting me")
    stopped = _wait(lambda: rt.ostore.consent(f"Patient/{stopper[0]}",
                                              [stopper[2]]).opted_out, 10.0)
    confirmation = _wait(lambda: twilio.messages(stopper[2])[1:], 10.0)
    services.work.enqueue("outreach.message", {"referral_id": referrals[stopper[0]].id,
                                               "purpose": "coordinator-callback",
                                               "channel": "sms"},
                          key=f"outreach.message:{referrals[stopper[0]].id}:demo-after-stop")
    skipped = _wait(lambda: [m for m in rt.ostore.messages_for(referrals[stopper[0]].id)
                             if m.rule == "opted-out"], 10.0)
    echo(f"  {stopper[1]} replied \"Stop texting me\": opted out of "
         f"{', '.join(sorted(stopped)) or '?'} (stored as a FHIR Consent); "
         f"{'one confirmation sent' if confirmation else 'no confirmation'}; the next SMS: "
         + (f"not sent [{skipped[0].rule}] {skipped[0].reason}" if skipped else "?"))
    if timings:
        echo(f"  Time to first contact: {min(timings):.2f} s (detection to the first SMS handed"
             " to the gateway, inside the calling window)")
    return {"zones": {"day": day, "night": night}, "first_contact_seconds": timings,
            "opted_out": sorted(stopped or []), "after_stop": skipped[0].rule if skipped else "",
            "referrals": {pid: r.id for pid, r in referrals.items()}}


def _deferred(rt: Runtime, referral_id: str) -> list[Any]:
    return [m for m in rt.ostore.messages_for(referral_id) if m.status == "deferred"]


def _store_patient(services: Any, pid: str, name: str, phone: str, language: str,
                   zone: str) -> None:
    services.resources.put({
        "resourceType": "Patient", "id": pid, "name": [{"given": [name], "family": "Demo"}],
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/timezone",
                       "valueCode": zone}],
        "telecom": [{"system": "phone", "value": phone, "use": "mobile", "rank": 1},
                    {"system": "email", "value": f"{pid}@example.org", "rank": 2}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47",
                                                    "code": language}]}, "preferred": True}]},
        server=DEMO_SERVER)
    services.resources.put({
        "resourceType": "ServiceRequest", "id": f"sr-{pid}", "status": "active",
        "intent": "order", "subject": {"reference": f"Patient/{pid}"},
        "requester": {"reference": "Practitioner/demo-pcp", "display": "Dr. Okafor"},
        "code": {"text": "Referral to endocrinology"}}, server=DEMO_SERVER)


def _detect(services: Any, pid: str) -> Referral:
    draft = Referral(id=new_referral_id(), source_key=f"{DEMO_SERVER}|ServiceRequest/sr-{pid}-"
                     f"{int(time.time())}", service_request=f"ServiceRequest/sr-{pid}",
                     patient=f"Patient/{pid}", priority="urgent", specialty="endocrinology",
                     reason_text="Endocrinology consult: thyroid nodule",
                     requester="Practitioner/demo-pcp")
    referral, _created = services.referrals.open(draft, Command("detect", actor=LISTENER,
                                                                source="demo"))
    return referral


def _wait(probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.02)
    return probe()


class _Late:
    """The demo's web app, set once the server knows its port."""

    inner: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.inner(environ, start_response)
