"""Our outbound v2 against a second, independent MLLP peer: the HAPI HL7v2 2.6.0 server built
from interop/hapi-hl7v2 (ACK-only; it parses each message into HAPI's own v2.5.1 structures,
with HAPI's default validation, before it answers). Every RRI and SIU that a referral's
lifecycle sends must come back AA from HAPI, on SQLite and PostgreSQL; and HAPI's ACKs to the
bench's REF^I12 are read by our MLLP client.

The peer starts once per session on a free loopback port (`interop/hapi-hl7v2/run start PORT`,
a data directory of its own) and stops at the end; it needs Java 17 and Maven like the HAPI
FHIR peer (the interop conftest deselects these tests with one line when they are missing,
unless REFLOOP_REQUIRE_INTEROP=1).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from hl7_bridge.client import MllpClient
from hl7_bridge.send import summarise_ack
from hl7_bridge.tables import outbound_log
from referrals.model import Actor, Command, Link
from refloop.services import Services, build_services
from refloop.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN = REPO_ROOT / "interop" / "hapi-hl7v2" / "run"
FIXTURES = REPO_ROOT / "fixtures" / "hl7v2"
SENDER = "GPSYS^GPCLINIC"
SOURCE = f"hl7|{SENDER}|REF-2024-0042^GPCLINIC"
CLINIC = Actor("Practitioner/walsh", "Prof Walsh", "human")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def hapi_hl7v2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, log file) of a running HAPI HL7v2 peer, built if needed."""
    data = tmp_path_factory.mktemp("hapi-hl7v2")
    env = {**os.environ, "HAPI_HL7V2_DATA_DIR": str(data), "HAPI_HL7V2_LOG_MESSAGES": "1"}
    port = _free_port()
    started = subprocess.run([str(RUN), "start", str(port)], env=env, capture_output=True,
                             text=True, timeout=1200, check=False)
    if started.returncode != 0:
        pytest.fail(f"the HAPI HL7v2 peer did not start:\n{started.stderr[-3000:]}")
    try:
        yield port, data / "peer.log"
    finally:
        subprocess.run([str(RUN), "stop"], env=env, capture_output=True, timeout=60,
                       check=False)


@pytest.fixture
def services(database_url: str, tmp_path: Path, hapi_hl7v2: tuple[int, Path]
             ) -> Iterator[Services]:
    port, _ = hapi_hl7v2
    section = {"senders": {SENDER: {"outbound": {
        "host": "127.0.0.1", "port": port, "timeout_seconds": 10, "max_attempts": 2,
        "events": ["accepted", "declined", "scheduled", "no-show", "appointment-cancelled",
                   "visit-completed", "loop-closed", "cancelled"]}}}}
    built = build_services(Settings(var_dir=tmp_path / "var", database_url=database_url,
                                    sections={"hl7": section}))
    yield built
    built.close()


def _drain(services: Services) -> int:
    from referrals.worker import Worker
    from refloop.wiring import all_handlers

    handlers = {k: v for k, v in all_handlers(services).items() if k.startswith("hl7.")}
    return Worker(services.work, handlers).drain(1000)


def _book(services: Services, appointment_id: str, status: str) -> Link:
    services.resources.put({
        "resourceType": "Appointment", "id": appointment_id, "status": status,
        "start": "2024-06-03T09:30:00+01:00", "end": "2024-06-03T10:00:00+01:00",
        "participant": [{"actor": {"reference": "Practitioner/walsh"}, "status": "accepted"}],
    }, server="local")
    return Link("Appointment", f"Appointment/{appointment_id}", status)


def test_hapi_parses_and_accepts_our_rri_and_siu(services: Services,
                                                  hapi_hl7v2: tuple[int, Path]) -> None:
    intake = services.adapters["hl7"].intake
    ack = intake.store([intake.assess_frame(
        (FIXTURES / "authored__REF_I12_new_referral_utf8.hl7").read_bytes())])[0]
    assert ack is not None and b"MSA|CA|GP000101" in ack
    _drain(services)
    referral = services.store.try_get_by_source(SOURCE)
    assert referral is not None

    def act(action: str, **kw: object) -> None:
        services.referrals.act(referral.id, Command(action, actor=CLINIC, source="smart",
                                                    **kw))  # type: ignore[arg-type]

    act("accept")
    act("schedule", changes={"add_outputs": [_book(services, "appt-1", "booked")]})
    act("no-show", changes={"add_outputs": [_book(services, "appt-1", "noshow")]})
    act("schedule", changes={"add_outputs": [_book(services, "appt-2", "booked")]})
    act("complete-visit")
    _drain(services)

    with services.db.read() as conn:
        logged = conn.execute(sa.select(outbound_log.c.message_type, outbound_log.c.control_id,
                                        outbound_log.c.ack_code)
                              .order_by(outbound_log.c.id)).all()
    assert [row.message_type for row in logged] == [
        "RRI^I12", "SIU^S12", "SIU^S26", "SIU^S12", "RRI^I13"]
    assert {row.ack_code for row in logged} == {"AA"}
    assert services.work.counts().get("quarantined", 0) == 0
    # HAPI's own reading of each message: the structure class it parsed it into, its ACK
    _, log_file = hapi_hl7v2
    seen = set(re.findall(r"^message (\S+) control=(\S+) ack=(\S+)$", log_file.read_text(),
                          re.M))
    for row in logged:
        structure = {"RRI": "RRI_I12", "SIU": "SIU_S12"}[row.message_type[:3]]
        assert (structure, row.control_id, "AA") in seen, (row, sorted(seen))


def test_our_client_reads_hapi_acks(hapi_hl7v2: tuple[int, Path]) -> None:
    """The bench's REF^I12 (v2.5.1) sent to HAPI over our MLLP client: AA, MSA-2 echoed."""
    port, _ = hapi_hl7v2
    raw = (FIXTURES / "authored__bench_REF_I12_v251_21seg.hl7").read_bytes()
    with MllpClient("127.0.0.1", port, 10) as client:
        answer = summarise_ack(client.send(raw))
    assert answer["code"] == "AA" and answer["control_id"] == "BENCH0002"


def test_hapi_parses_and_accepts_our_partner_messages(services: Services,
                                                      hapi_hl7v2: tuple[int, Path]) -> None:
    """What other adapters send through the bridge (hl7.partner-message: the loop's status
    request, milestone update and consult note) for a referral that came over FHIR: HAPI parses
    each into its own structure and answers AA."""
    import base64

    from referrals.model import Referral, new_referral_id

    services.resources.put({"resourceType": "Patient", "id": "p-1", "birthDate": "1958-11-02",
                            "name": [{"family": "Moreau", "given": ["Lena"]}],
                            "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.9999.1",
                                            "value": "MRN77"}]}, server="http://ehr.test/fhir")
    referral, _ = services.referrals.open(Referral(
        id=new_referral_id(), source_key="fhir|http://ehr.test/fhir|ServiceRequest/sr-1",
        service_request="ServiceRequest/sr-1", patient="Patient/p-1"), Command("detect"))
    pdf = (FIXTURES / "authored__MDM_T02_large_base64_pdf.hl7").read_bytes()
    data = pdf.split(b"^Base64^")[1].split(b"|")[0].decode()
    asks = [("REF^I15", {"status": "A", "text": "Consult note requested"}),
            ("RRI^I12", {"status": "A", "text": "The patient was seen by the specialist."}),
            ("MDM^T02", {"document": {"id": "note-1", "date": "2026-03-02T10:00:00+00:00",
                                      "content_type": "application/pdf",
                                      "data_b64": base64.b64encode(
                                          base64.b64decode(data)).decode()}})]
    for n, (message, extra) in enumerate(asks):
        services.work.enqueue("hl7.partner-message", {
            "partner": SENDER, "message": message, "referral_id": referral.id, **extra},
            key=f"interop:partner:{n}")
    _drain(services)
    with services.db.read() as conn:
        logged = conn.execute(sa.select(outbound_log.c.message_type, outbound_log.c.control_id,
                                        outbound_log.c.ack_code)
                              .where(outbound_log.c.referral_id == referral.id)
                              .order_by(outbound_log.c.id)).all()
    assert [(row.message_type, row.ack_code) for row in logged] == [
        ("REF^I15", "AA"), ("RRI^I12", "AA"), ("MDM^T02", "AA")]
    _, log_file = hapi_hl7v2
    seen = set(re.findall(r"^message (\S+) control=(\S+) ack=(\S+)$", log_file.read_text(),
                          re.M))
    for row, structure in zip(logged, ("REF_I12", "RRI_I12", "MDM_T02"), strict=True):
        assert (structure, row.control_id, "AA") in seen, (row, sorted(seen))
