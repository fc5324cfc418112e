"""A v2 scheduling system as the destination: the patient sends preferred days and times,
Refloop sends SRM^S01 over MLLP to a real partner (python-hl7's asyncio MLLP server), the
partner's SIU^S12 comes back through the v2 bridge and books the referral (confirmation with the
.ics, reminders), and its SIU^S26 is a no-show that starts the recovery ladder."""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hl7
from calendar_data import Sekmet, free_port, make_calendar
from sched_world import messages, open_referral

from referrals.model import Stage
from referrals.worker import Worker
from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings
from refloop.wiring import all_handlers

PARTNER = "SCHED^CLINIC"


class Partner:
    """The scheduling system's MLLP side: records each message and answers AA."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from hl7.mllp import start_hl7_server

        async def serve(reader: Any, writer: Any) -> None:
            try:
                while not writer.is_closing():
                    message = await reader.readmessage()
                    self.received.append(str(message))
                    writer.writemessage(message.create_ack("AA"))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            start_hl7_server(serve, "127.0.0.1", self.port, encoding="utf-8"))
        self.ready.set()
        self.loop.run_forever()
        server.close()

    def __enter__(self) -> Partner:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def siu(trigger: str, referral_id: str, start: datetime, status: str) -> bytes:
    when = start.strftime("%Y%m%d%H%M%S+0000")
    end = (start + timedelta(minutes=30)).strftime("%Y%m%d%H%M%S+0000")
    segments = [
        f"MSH|^~\\&|SCHED|CLINIC|REFLOOP|REFLOOP|20261201090000||SIU^{trigger}^SIU_S12|"
        f"SIU{trigger}{referral_id[-8:]}|P|2.5.1",
        "|".join(["SCH", f"APT-{referral_id[-8:]}^CLINIC", f"APT-{referral_id[-8:]}^CLINIC",
                  "", "", "", "", "^Cardiology", "", "", "", f"^^^{when}^{end}",
                  *[""] * 13, status, f"{referral_id}^REFLOOP"]),
        "PID|1||MRN-77^^^CLINIC^MR||Okafor^Ada||19610423|F",
        "RGS|1|A",
        "AIP|1||DOC9^Lindqvist^Eva^^^Dr|||",
        "AIL|1||Heart Clinic^^^^12 Elm Street|||"]
    return ("\r".join(segments) + "\r").encode()


def test_preferences_srm_then_siu_books_and_s26_is_a_noshow(database_url: str, tmp_path: Path,
                                                            sekmet: Sekmet) -> None:
    calendar = make_calendar(sekmet.base, slots=0)
    port = free_port()
    settings = Settings(
        var_dir=tmp_path / "var", database_url=database_url,
        public_base_url="https://refloop.test",
        sections={"hl7": {"senders": {PARTNER: {"time_zone": "UTC", "outbound": {
            "host": "127.0.0.1", "port": port, "timeout_seconds": 5, "events": []}}}},
            "scheduling": {"destinations": [{
                "name": "cardiology", "specialties": ["cardiology"], "source": "hl7v2",
                "hl7_partner": PARTNER, "time_zone": "America/Chicago"}]}})
    services = build_services(settings)
    try:
        client = create_app(services).test_client()
        https = {"base_url": "https://refloop.test"}
        referral = open_referral(services, calendar)
        token = services.adapters["scheduling"].issue_booking_link(referral.id).rsplit("/")[-1]
        client.post(f"/p/{token}", data={"day": "23", "month": "4", "year": "1961"}, **https)
        home = client.get("/p/home", **https).data.decode()
        assert "When can you come?" in home
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', home).group(1)
        assert client.post("/p/request", data={"csrf_token": csrf}, **https).status_code == 400
        sent = client.post("/p/request", data={"csrf_token": csrf, "day": ["mon", "wed"],
                                               "time": ["morning"],
                                               "earliest": "2026-12-14"}, **https)
        assert sent.status_code == 200 and b"asked the clinic" in sent.data
        hl7_work = {k: v for k, v in all_handlers(services).items() if k.startswith("hl7.")}
        with Partner(port) as partner:
            assert Worker(services.work, hl7_work).drain() == 1
        [raw] = partner.received
        srm = hl7.parse(raw)
        assert str(srm.segment("MSH")[9]) == "SRM^S01^SRM_S01"
        assert str(srm.segment("ARQ")[24]) == f"{referral.id}^REFLOOP"
        assert str(srm.segment("ARQ")[11]) == "20261214^"
        assert str(srm.segment("APR")[1]).split("~") == [
            "MON^OK", "TUE^NO", "WED^OK", "THU^NO", "FRI^NO", "SAT^NO", "SUN^NO",
            "PREFSTART^0800", "PREFEND^1200"]
        assert str(srm.segment("PID")[7]) == "19610423"

        intake = services.adapters["hl7"].intake
        start = (datetime.now(UTC) + timedelta(days=9)).replace(hour=14, minute=0, second=0,
                                                                microsecond=0)
        intake.store([intake.assess_frame(siu("S12", referral.id, start, "Booked"))])
        Worker(services.work, hl7_work).drain()
        after = services.store.get(referral.id)
        assert after.stage == Stage.SCHEDULED
        row = services.adapters["scheduling"].book.current(referral.id)
        assert row.server == f"hl7:{PARTNER}" and row.start == start
        [confirmation] = messages(services.work, services, "booking-confirmation")
        assert confirmation["attachments"][0]["filename"] == "appointment.ics"
        assert "Heart Clinic" in confirmation["params"]["location"]
        home = client.get("/p/home", **https).data.decode()
        assert "Your appointment" in home

        scheduling = services.adapters["scheduling"]
        assert scheduling.check_visits(start + timedelta(hours=5)) == 0
        assert services.store.get(referral.id).stage == Stage.SCHEDULED  # v2 tells, not us
        intake.store([intake.assess_frame(siu("S26", referral.id, start, "Noshow"))])
        Worker(services.work, hl7_work).drain()
        assert services.store.get(referral.id).stage == Stage.NO_SHOW
        Worker(services.work, {"scheduling.recovery": all_handlers(services)[
            "scheduling.recovery"]}).drain()
        assert len(messages(services.work, services, "no-show-recovery")) == 1
    finally:
        services.close()
