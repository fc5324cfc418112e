"""The consult note delivered to the referring provider, and its receipt (what CMS50 counts):

- `fhir`: the DocumentReference written to the referrer's EHR (conditional create on our
  identifier), then the receipt Task there in the CMS50 shape; the server's 2xx is the receipt;
- `v2`: an MDM^T02 with the note to the referrer's v2 system, through the bridge; the AA/CA is
  the receipt;
- `link`: a mail with a secure link (`send-note`); the referrer reading the note behind it, after
  the patient's date of birth, is the receipt.

Each receipt is a `record-receipt` event and a receipt Task in our own store (code LOINC 11488-4,
basedOn the referral's ServiceRequest, status completed, executionPeriod.end the receipt time).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loop import documents, fhir, letters, outbox
from loop.client import FhirClient
from loop.config import LoopConfig, Referrer
from loop.context import LOOP, Core
from loop.fhir import source_base
from loop.links import NOTE, LinkStore
from loop.tables import deliveries
from referrals import closed_loop as loop
from referrals.model import Command, Referral, source_server
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.loop.delivery")

DELIVER_KIND = "loop.deliver"
PENDING, SENT, RECEIVED, FAILED = "pending", "sent", "received", "failed"

ClientFor = Callable[[str], FhirClient]


@dataclass(frozen=True)
class Delivery:
    key: str
    referral_id: str
    referrer: str
    document: str
    channel: str
    status: str
    remote: str
    receipt: str
    error: str
    sent_at: datetime | None
    received_at: datetime | None


class Deliveries:
    def __init__(self, core: Core, config: LoopConfig, links: LinkStore,
                 client_for: ClientFor) -> None:
        self.core = core
        self.config = config
        self.links = links
        self.client_for = client_for

    # -- deciding (inside the referral's transaction) ---------------------------------------

    def enqueue(self, conn: Connection, referral: Referral, notes: list[str]) -> None:
        referrer = self.config.referrer_for(referral.requester,
                                            source_server(referral.source_key))
        if referrer is None or referrer.note == "none":
            return
        for note in notes:
            key = f"{referral.id}:{note}"
            held = documents.find_note(conn, note)
            inserted = conn.execute(sa.select(deliveries.c.key)
                                    .where(deliveries.c.key == key)).first() is None
            if not inserted:
                continue
            conn.execute(deliveries.insert().values(
                key=key, referral_id=referral.id, referrer=referrer.name, document=note,
                document_server=held.server if held else "", channel=referrer.note,
                status=PENDING, created_at=self.core.now()))
            self.core.work.enqueue(DELIVER_KIND, {"key": key},
                                   key=f"{DELIVER_KIND}:{key}", conn=conn)

    # -- sending (work handlers) ------------------------------------------------------------

    def handle_deliver(self, item: WorkItem) -> None:
        delivery = self.get(str(item.payload["key"]))
        if delivery is None or delivery.status != PENDING:
            return
        referral = self.core.store.get(delivery.referral_id)
        referrer = self.config.referrer(delivery.referrer)
        if referrer is None:
            return
        if delivery.channel == "fhir":
            self._to_fhir(delivery, referral, referrer)
        elif delivery.channel == "v2":
            self._to_v2(delivery, referral, referrer)
        elif delivery.channel == "link":
            self._as_link(delivery, referral, referrer)

    def _to_fhir(self, delivery: Delivery, referral: Referral, referrer: Referrer) -> None:
        target = referrer.fhir_base or source_base(referral)
        if not target:
            self._fail(delivery, "no FHIR server to deliver the note to: set fhir_base")
            return
        with self.core.db.read() as conn:
            held = documents.find_note(conn, delivery.document)
            if held is None:
                self._fail(delivery, f"{delivery.document} is not in the store")
                return
            content = documents.content_of(conn, held.body)
        client = self.client_for(target)
        ident = _ident(delivery.key)
        note = client.create_once(
            fhir.delivered_note(referral, held.body, ident, target, content),
            f"{fhir.DOCUMENT_SYSTEM}|{ident}")
        remote = f"DocumentReference/{note['id']}"
        received = self.core.now()
        receipt = client.create_once(
            fhir.receipt_task(referral, remote, received, ident, target=target),
            f"{fhir.RECEIPT_SYSTEM}|{ident}")
        self.record_receipt(delivery.key, "fhir", received,
                            remote=f"{target}/{remote}",
                            remote_receipt=f"{target}/Task/{receipt['id']}")

    def _to_v2(self, delivery: Delivery, referral: Referral, referrer: Referrer) -> None:
        with self.core.db.read() as conn:
            held = documents.find_note(conn, delivery.document)
            if held is None:
                self._fail(delivery, f"{delivery.document} is not in the store")
                return
            content_type, data, _title = documents.first_attachment(conn, held.body)
        with self.core.db.write() as conn:
            outbox.ask_v2(self.core.work, conn, key=f"loop.v2:note:{delivery.key}",
                          partner=referrer.v2_partner, message="MDM^T02",
                          referral_id=referral.id,
                          document={"id": _ident(delivery.key),
                                    "date": str(held.body.get("date") or ""),
                                    "content_type": content_type,
                                    "data_b64": base64.b64encode(data).decode("ascii")},
                          context={"purpose": "note", "delivery": delivery.key})
            conn.execute(deliveries.update().where(deliveries.c.key == delivery.key)
                         .values(status=SENT, sent_at=self.core.now()))

    def _as_link(self, delivery: Delivery, referral: Referral, referrer: Referrer) -> None:
        now = self.core.now()
        with self.core.db.write() as conn:
            held = documents.find_note(conn, delivery.document)
            token = self.links.issue(referral.id, NOTE, now, recipient=referrer.email,
                                     document=delivery.document,
                                     document_server=held.server if held else "", conn=conn)
            letter = letters.note_link(referral, link=f"{self.core.base_url}/loop/n/{token}",
                                       expires=now + timedelta(days=self.config.link_days),
                                       sender=self.config.sender_name)
            outbox.ask_mail(self.core.work, conn, key=f"loop.mail:note:{delivery.key}",
                            to=referrer.email, subject=letter.subject, text=letter.text,
                            html=letter.html, purpose="note-link", referral_id=referral.id,
                            context={"purpose": "note", "delivery": delivery.key})

    # -- what came back ---------------------------------------------------------------------

    def link_sent(self, key: str) -> None:
        """The mail with the note link was accepted by the mail server: `send-note`."""
        delivery = self.get(key)
        if delivery is None or delivery.status != PENDING:
            return
        now = self.core.now()
        with self.core.db.write() as conn:
            conn.execute(deliveries.update().where(deliveries.c.key == key,
                                                   deliveries.c.status == PENDING)
                         .values(status=SENT, sent_at=now))
            self.core.referrals.act(delivery.referral_id, Command(
                loop.SEND_NOTE, actor=LOOP, at=now, source="loop", changes={"details": {
                    "channel": "link", "document": delivery.document}}), conn=conn)

    def record_receipt(self, key: str, channel: str, received: datetime, *, remote: str = "",
                       remote_receipt: str = "", conn: Connection | None = None) -> bool:
        """The referrer received the note: the receipt Task in our store and the
        `record-receipt` event, once per delivery. False when it was recorded before."""
        delivery = self.get(key, conn)
        if delivery is None or delivery.status == RECEIVED:
            return False
        referral = self.core.store.get(delivery.referral_id, conn)
        receipt = fhir.receipt_task(referral, delivery.document, received, _ident(key))
        receipt["id"] = f"receipt-{_ident(key)}"
        with self.core.db.using(conn) as c:
            done = c.execute(deliveries.update().where(
                deliveries.c.key == key, deliveries.c.status != RECEIVED).values(
                status=RECEIVED, received_at=received, remote=remote[:512],
                receipt=f"Task/{receipt['id']}", sent_at=delivery.sent_at or received)
            ).rowcount
            if not done:
                return False
            self.core.resources.put(receipt, server=documents.LOCAL, conn=c)
            details = {"channel": channel, "document": delivery.document,
                       "received_at": received.isoformat(), "receipt": f"Task/{receipt['id']}"}
            if remote:
                details["remote"] = remote
            if remote_receipt:
                details["remote_receipt"] = remote_receipt
            self.core.referrals.act(referral.id, Command(
                loop.RECORD_RECEIPT, actor=LOOP, at=received, source=f"loop:{channel}",
                changes={"details": details}), conn=c)
        log.info("consult note received by the referrer", extra={"referral_id": referral.id,
                                                                "channel": channel})
        return True

    def failed(self, key: str, why: str) -> None:
        delivery = self.get(key)
        if delivery is not None:
            self._fail(delivery, why)

    def _fail(self, delivery: Delivery, why: str) -> None:
        with self.core.db.write() as conn:
            conn.execute(deliveries.update().where(deliveries.c.key == delivery.key,
                                                   deliveries.c.status != RECEIVED)
                         .values(status=FAILED, error=why[:2000]))
        log.warning("consult note not delivered", extra={"referral_id": delivery.referral_id,
                                                         "why": why})

    # -- the store --------------------------------------------------------------------------

    def get(self, key: str, conn: Connection | None = None) -> Delivery | None:
        query = sa.select(deliveries).where(deliveries.c.key == key)
        if conn is not None:
            row = conn.execute(query).mappings().first()
        else:
            with self.core.db.read() as c:
                row = c.execute(query).mappings().first()
        return _delivery(row) if row else None

    def of_referral(self, referral_id: str) -> list[Delivery]:
        with self.core.db.read() as c:
            rows = c.execute(sa.select(deliveries).where(deliveries.c.referral_id == referral_id)
                             .order_by(deliveries.c.created_at)).mappings().all()
        return [_delivery(r) for r in rows]


def _ident(key: str) -> str:
    """A short stable identifier of a delivery (our identifier on the referrer's side)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _delivery(row: sa.RowMapping) -> Delivery:
    return Delivery(key=row["key"], referral_id=row["referral_id"], referrer=row["referrer"],
                    document=row["document"], channel=row["channel"], status=row["status"],
                    remote=row["remote"], receipt=row["receipt"], error=row["error"],
                    sent_at=row["sent_at"], received_at=row["received_at"])
