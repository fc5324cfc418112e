"""What the providers' pages do, without the web framework: the facts a page may show, the
upload (the PDF kept, its DocumentReference linked: the note is in), the date-of-birth check's
answer, and reading the note (the receipt)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loop import documents
from loop.config import LoopConfig
from loop.context import Core
from loop.delivery import Deliveries
from loop.letters import order_of, short
from loop.links import Link, LinkStore
from loop.milestones import has_note
from loop.tables import chases
from referrals.errors import IllegalTransition, InboundError, RefloopError
from referrals.lifecycle import allowed_actions
from referrals.model import Actor, Command, Referral, source_server

EXTENSIONS = {"application/pdf": ".pdf", "text/plain": ".txt", "text/html": ".html",
              "application/xml": ".xml", "text/xml": ".xml", "image/png": ".png",
              "image/jpeg": ".jpg"}


class PortalError(RefloopError):
    """What to tell the person on the page, with the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class VisitFacts:
    reference: str
    specialty: str
    visit: str
    initials: str
    born: str


@dataclass(frozen=True)
class NoteFacts:
    reference: str
    order: str
    specialty: str
    title: str
    date: str
    size: str


class Portal:
    def __init__(self, core: Core, config: LoopConfig, links: LinkStore,
                 deliveries: Deliveries) -> None:
        self.core = core
        self.config = config
        self.links = links
        self.deliveries = deliveries

    def now(self) -> datetime:
        return self.core.now()

    # -- the upload -------------------------------------------------------------------------

    def visit_facts(self, link: Link) -> VisitFacts:
        """The least that identifies the visit to the specialist's office."""
        referral = self.core.store.get(link.referral_id)
        patient = self._patient(referral)
        name = (patient.get("name") or [{}])[0]
        parts = [*name.get("given", [])[:1], name.get("family", "")]
        initials = " ".join(f"{p[0]}." for p in parts if p)
        with self.core.db.read() as conn:
            visit = conn.execute(chases.select().with_only_columns(chases.c.visit_at)
                                 .where(chases.c.referral_id == referral.id)).scalar()
        return VisitFacts(reference=short(referral.id), specialty=referral.specialty,
                          visit=f"{visit:%d %B %Y}" if visit else "",
                          initials=initials or "(not known)",
                          born=str(patient.get("birthDate", ""))[:4] or "(not known)")

    def accept_upload(self, link: Link, content: bytes, filename: str) -> str:
        """Keep the PDF and link its DocumentReference to the referral (close-loop, or link
        when the loop cannot close from where the referral is). Raises PortalError."""
        try:
            documents.check_pdf(content, self.config.max_upload_bytes)
        except InboundError as exc:
            raise self.refuse(link, [content], str(exc), exc.status) from exc
        now = self.now()
        name = _safe_name(filename)
        with self.core.db.write() as conn:
            referral = self.core.store.get(link.referral_id, conn, lock=True)
            if not self.links.mark_used(link.id, now, conn):
                raise PortalError("This link was used already: we have the note.", 410)
            allowed = allowed_actions(referral.stage)
            action = "close-loop" if "close-loop" in allowed else \
                "link" if "link" in allowed else ""
            if not action or (has_note(referral) and action == "link"):
                raise PortalError("We already have the consult note for this referral; "
                                  "thank you. Nothing was uploaded.", 409)
            specialist = self.config.specialist_for(referral.specialty, referral.performer)
            who = specialist.name if specialist else "the specialist"
            document = documents.keep_upload(conn, referral, content, name, now, who)
            self.core.resources.put(document, server=documents.LOCAL, conn=conn)
            try:
                self.core.referrals.act(referral.id, Command(
                    action, actor=Actor("Device/refloop-upload-link",
                                        f"{who} office (upload link to {link.recipient})",
                                        "human"),
                    at=now, source="loop:upload", source_message=document["id"],
                    changes={"add_outputs": [documents.as_link(document)]}), conn=conn)
            except IllegalTransition as exc:
                raise PortalError("The referral cannot take a note any more; nothing was "
                                  "uploaded. Call the referral team.", 409) from exc
        return action

    def refuse(self, link: Link, kept: list[bytes], message: str, status: int, *,
               detail: str = "") -> PortalError:
        """Keep refused input in quarantine (each file, even empty, up to the upload limit)
        under the link's referral; the error to show the person."""
        if self.core.quarantine is not None:
            for content in kept:
                self.core.quarantine.put(
                    origin="http", kind="loop.upload",
                    original=content[:self.config.max_upload_bytes],
                    reason=f"upload for referral {link.referral_id} refused: {message}{detail}",
                    content_type="application/octet-stream")
        return PortalError(message, status)

    def refuse_oversized(self, link: Link, first: bytes, limit: int) -> PortalError:
        """An upload over the web server's body limit, of which only the first part was read:
        that part is kept."""
        return self.refuse(link, [first], f"The file is larger than "
                           f"{documents.megabytes(self.config.max_upload_bytes)} MB. Upload a "
                           "smaller PDF.", 413, detail=f" (the request was over the web "
                           f"server's limit of {limit} bytes; its first {len(first)} bytes "
                           "are kept)")

    def refuse_late(self, link: Link, first: bytes, seconds: float) -> PortalError:
        """An upload the web server's request deadline cut short (a slow line, a sender that
        stopped): what arrived is kept."""
        return self.refuse(link, [first], f"The file did not arrive within {seconds:g} seconds, "
                           "so nothing was uploaded. Try again; if it happens again, call the "
                           "referral team.", 408, detail=f" (the request deadline of {seconds:g}"
                           f" s passed; its first {len(first)} bytes are kept)")

    def refuse_unread(self, link: Link, raw: bytes, content_type: str) -> PortalError:
        """A form that held no file the server could read, though it held bytes: the file came
        as a field without a file name (as `curl -F 'note=<f'` sends it), or the multipart
        framing is broken (another boundary, no closing one). The request is kept whole (the
        web server bounds it), with its Content-Type, and nothing is taken."""
        if self.core.quarantine is not None:
            self.core.quarantine.put(
                origin="http", kind="loop.upload", original=raw,
                reason=f"upload for referral {link.referral_id} refused: no file part could be "
                       "read (a part without a file name, or broken multipart framing); the "
                       "whole request is kept", content_type=content_type[:128])
        return PortalError("The file did not arrive as a file: the form sent it without a file "
                           "name, or in a form the server could not read. Choose the PDF in "
                           "the form (with curl: -F 'note=@file.pdf'). Nothing was uploaded.",
                           400)

    def refuse_several(self, link: Link, sent: list[bytes]) -> PortalError:
        """A form that sent more than one file: each is kept (not their names, which may name
        the patient), none is taken."""
        return self.refuse(link, sent,
                           f"Upload one PDF at a time: the form sent {len(sent)} files. "
                           "Nothing was uploaded.", 400)

    # -- the note ---------------------------------------------------------------------------

    def birth_date(self, link: Link) -> str:
        return str(self._patient(self.core.store.get(link.referral_id)).get("birthDate", ""))

    def note_facts(self, link: Link) -> NoteFacts:
        referral = self.core.store.get(link.referral_id)
        with self.core.db.read() as conn:
            held = documents.find_note(conn, link.document)
            if held is None:
                raise PortalError("The note is no longer available.", 410)
            content_type, content, title = documents.first_attachment(conn, held.body)
        return NoteFacts(reference=short(referral.id), order=order_of(referral),
                         specialty=referral.specialty, title=title,
                         date=str(held.body.get("date", ""))[:10],
                         size=f"{max(1, len(content) // 1024)} KB, "
                              f"{content_type.split(';')[0]}")

    def read_note(self, link: Link) -> tuple[str, bytes, str]:
        """The note's content to download; the first download is the referrer's receipt."""
        with self.core.db.read() as conn:
            held = documents.find_note(conn, link.document)
            if held is None:
                raise PortalError("The note is no longer available.", 410)
            content_type, content, title = documents.first_attachment(conn, held.body)
        now = self.now()
        key = f"{link.referral_id}:{link.document}"
        with self.core.db.write() as conn:
            self.links.mark_used(link.id, now, conn)
            self.deliveries.record_receipt(key, "link", now, conn=conn)
        return content_type, content, _safe_name(title, content_type)

    def _patient(self, referral: Referral) -> dict[str, Any]:
        found = self.core.resources.try_get("Patient", referral.patient.rsplit("/", 1)[-1],
                                            server=source_server(referral.source_key))
        return dict(found or {})


def _safe_name(name: str, content_type: str = "application/pdf") -> str:
    """A download or stored file name: letters, digits, dot, dash, underscore, and the
    extension of its content type."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1])
    base = base.strip(".-")[:80] or "consult-note"
    extension = EXTENSIONS.get(content_type.split(";")[0].strip().lower(), ".bin")
    return base if base.lower().endswith(extension) else f"{base}{extension}"
