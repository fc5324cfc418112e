"""The outreach harness: our app served on 127.0.0.1 with a real database (SQLite and
PostgreSQL), THE TWILIO SANDBOX (a fake SMS/voice gateway, since the real one cannot run here)
calling back into it, a real SMTP server (aiosmtpd) capturing mail, and a fake clock shared by
the work queue and outreach, so a whole ladder runs in a moment."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from outreach.runtime import Runtime
from outreach.sandbox import MailCapture, SandboxRules, TwilioSandbox
from referrals.model import Actor, Command, Referral, new_referral_id
from referrals.worker import Worker
from refloop.app import create_app
from refloop.services import Services, build_services
from refloop.settings import Settings
from refloop.wiring import all_handlers

#: Tuesday 2030-03-05 15:00 UTC = 10:00 in New York, 05:00 in Honolulu
START = datetime(2030, 3, 5, 15, 0, tzinfo=UTC)
NY_MOBILE = "+12125550123"
HONOLULU_MOBILE = "+18085550199"
COORD = Actor("Practitioner/coord-1", "Casey Coordinator", "human")


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now


class _Late:
    """A WSGI app set after the server knows its port (the public URL goes into the config)."""

    app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)


@dataclass
class Harness:
    services: Services
    rt: Runtime
    twilio: TwilioSandbox
    mail: MailCapture
    url: str
    clock: Clock
    worker: Worker = field(init=False)

    def __post_init__(self) -> None:
        self.worker = Worker(self.services.work, all_handlers(self.services))

    def settle(self) -> int:
        """Run due work and wait for the sandbox's callbacks until both are quiet. The wait is
        for the callbacks themselves (each is stored before our answer), however slow a loaded
        machine makes them, so nothing arrives after settle() returns."""
        total = 0
        for _ in range(100):
            done = self.worker.drain()
            assert self.twilio.wait_idle(), "the sandbox's callbacks were not answered"
            again = self.worker.drain()
            total += done + again
            if not done and not again:
                return total
        raise AssertionError("outreach did not settle")

    def at(self, moment: datetime) -> int:
        self.clock.now = moment
        return self.settle()

    def advance(self, **delta: float) -> int:
        return self.at(self.clock.now + timedelta(**delta))

    def patient(self, pid: str, *, phone: str = NY_MOBILE, email: str = "", state: str = "NY",
                language: str = "", telecom: list[dict[str, Any]] | None = None) -> str:
        resource: dict[str, Any] = {
            "resourceType": "Patient", "id": pid,
            "name": [{"given": ["Pat"], "family": pid}],
            "telecom": telecom if telecom is not None else (
                [{"system": "phone", "value": phone, "use": "mobile", "rank": 1}] if phone
                else []) + ([{"system": "email", "value": email, "rank": 2}] if email else []),
            "address": [{"use": "home", "state": state, "country": "US"}] if state else []}
        if language:
            resource["communication"] = [{"language": {"coding": [{
                "system": "urn:ietf:bcp:47", "code": language}]}, "preferred": True}]
        self.services.resources.put(resource, server="http://ehr.test/fhir")
        self.services.resources.put({
            "resourceType": "ServiceRequest", "id": f"sr-{pid}", "status": "active",
            "intent": "order", "subject": {"reference": f"Patient/{pid}"},
            "code": {"text": "Referral to cardiology"},
            "requester": {"reference": "Practitioner/dr-1", "display": "Dr. Rivera"}},
            server="http://ehr.test/fhir")
        return f"Patient/{pid}"

    def referral(self, pid: str, *, priority: str = "routine", accept: bool = True,
                 source: str = "ehr") -> Referral:
        draft = Referral(id=new_referral_id(), source_key=f"{source}|ServiceRequest/sr-{pid}",
                         service_request=f"ServiceRequest/sr-{pid}", patient=f"Patient/{pid}",
                         priority=priority, specialty="cardiology",
                         reason_text="Cardiology consult: chest pain")
        referral, _ = self.services.referrals.open(draft, Command("detect", at=self.clock.now))
        if accept:
            referral = self.services.referrals.act(referral.id, Command(
                "accept", actor=COORD, at=self.clock.now))
        return referral


def outreach_settings(database_url: str, tmp_path: Path, url: str, twilio: TwilioSandbox,
                      mail: MailCapture, *, twilio_extra: dict[str, Any] | None = None,
                      sections: dict[str, Any] | None = None, **extra: Any) -> Settings:
    """`extra`: more [outreach] keys; `twilio_extra`: more [outreach.twilio] keys; `sections`:
    other top-level tables."""
    section: dict[str, Any] = {
        "practice_name": "Springfield Medical Group", "practice_phone": "+15555550100",
        "coordinator_line": "+15555550101", "public_base_url": url,
        "twilio": {"account_sid": twilio.account_sid, "auth_token": twilio.auth_token,
                   "from_number": "+15005550006", "api_base_url": twilio.url,
                   **(twilio_extra or {})},
        "smtp": {"host": "127.0.0.1", "port": mail.port, "security": "none",
                 "from_address": "clinic@refloop.test"}, **extra}
    return Settings(var_dir=tmp_path / "var", database_url=database_url,
                    sections={"outreach": section, **(sections or {})})


def _sandboxes() -> Iterator[tuple[TwilioSandbox, MailCapture]]:
    twilio = TwilioSandbox(rules=SandboxRules()).start()
    mail = MailCapture().start()
    yield twilio, mail
    twilio.stop()
    mail.stop()


def make_harness(database_url: str, tmp_path: Path, sandboxes: tuple[TwilioSandbox, MailCapture],
                 **extra: Any) -> Iterator[Harness]:
    twilio, mail = sandboxes
    late = _Late()
    server = make_server("127.0.0.1", 0, late, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    twilio.rules.inbound_url = f"{url}/outreach/twilio/sms"
    services = build_services(outreach_settings(database_url, tmp_path, url, twilio, mail,
                                                **extra))
    late.app = create_app(services)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    clock = Clock()
    # records are built at INFO, so a log call that breaks only when logged fails here too
    logging.getLogger("refloop.outreach").setLevel(logging.INFO)
    services.work.clock = clock
    rt: Runtime = services.adapters["outreach"]
    rt.clock = clock
    twilio.clock = clock
    try:
        yield Harness(services, rt, twilio, mail, url, clock)
    finally:
        server.shutdown()
        server.server_close()
        services.close()




def write_config(h: Harness, tmp_path: Path) -> Path:
    """The harness's settings as a refloop.toml (for child processes and the CLI)."""
    section = h.services.settings.section("outreach")
    twilio, smtp = section["twilio"], section["smtp"]
    lines = [f'database_url = "{h.services.settings.database_url}"',
             f'var_dir = "{h.services.settings.var_dir}"', "", "[outreach]"]
    lines += [f'{k} = "{v}"' for k, v in section.items() if isinstance(v, str)]
    lines += ["", "[outreach.twilio]"] + [f'{k} = "{v}"' for k, v in twilio.items()]
    lines += ["", "[outreach.smtp]"] + [f"{k} = {v!r}".replace("'", '"')
                                        for k, v in smtp.items()]
    path = tmp_path / "refloop.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
