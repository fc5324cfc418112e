"""Consult notes: finding a note we hold (whichever adapter stored it), its content for delivery,
and a PDF uploaded through a link kept as a file with its DocumentReference."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loop.fhir import CONSULT_NOTE, instant
from loop.tables import files
from referrals.errors import InboundError
from referrals.model import LINK_CONSULT_NOTE, Link, Referral
from referrals.store.schema import resources

LOCAL = "local"
#: the attachment URL of an uploaded file (resolved against our own store, never fetched)
FILE_URL = "urn:refloop:loop-file:"
PDF_MAGIC = b"%PDF-"


@dataclass(frozen=True)
class Held:
    server: str
    body: dict[str, Any]


def find_note(conn: Connection, reference: str) -> Held | None:
    """The DocumentReference `DocumentReference/<id>` as we hold it (latest, any server)."""
    rid = reference.rsplit("/", 1)[-1]
    row = conn.execute(sa.select(resources.c.server, resources.c.body).where(
        resources.c.resource_type == "DocumentReference", resources.c.resource_id == rid,
        resources.c.deleted.is_(False)).order_by(resources.c.updated_at.desc())).first()
    if row is None or not isinstance(row.body, dict):
        return None
    return Held(str(row.server), dict(row.body))


def content_of(conn: Connection, document: dict[str, Any]) -> list[dict[str, Any]]:
    """The note's attachments with their data inline (an uploaded file's bytes are read from
    our store); attachments we cannot fill are kept as they are (a URL)."""
    found = []
    for entry in document.get("content") or []:
        attachment = dict(entry.get("attachment") or {})
        url = str(attachment.get("url") or "")
        if url.startswith(FILE_URL) and not attachment.get("data"):
            content = conn.execute(sa.select(files.c.content).where(
                files.c.id == url.removeprefix(FILE_URL))).scalar()
            if content is not None:
                attachment["data"] = base64.b64encode(bytes(content)).decode("ascii")
                attachment.pop("url", None)
        found.append({"attachment": attachment})
    return found


def first_attachment(conn: Connection, document: dict[str, Any]) -> tuple[str, bytes, str]:
    """(content type, bytes, title) of the note's first attachment with data."""
    for entry in content_of(conn, document):
        attachment = entry["attachment"]
        if attachment.get("data"):
            return (str(attachment.get("contentType") or "application/octet-stream"),
                    base64.b64decode(attachment["data"]),
                    str(attachment.get("title") or "consult-note"))
    raise InboundError("the consult note has no content we hold")


def megabytes(size: int) -> str:
    """A size limit as people read it: 10, 2.5, 0.1 (never 0 for a limit below a megabyte)."""
    return f"{size / (1024 * 1024):.1f}".removesuffix(".0")


def check_pdf(content: bytes, limit: int) -> None:
    """Refuse what is not a PDF, or too large, with a message for the person uploading."""
    if not content:
        raise InboundError("Choose a PDF file to upload.")
    if len(content) > limit:
        raise InboundError(f"The file is larger than {megabytes(limit)} MB. Upload a "
                           "smaller PDF.", status=413)
    if not content.startswith(PDF_MAGIC):
        raise InboundError("That file is not a PDF. Save the consult note as PDF and upload "
                           "it again.", status=415)


def keep_upload(conn: Connection, referral: Referral, content: bytes, filename: str,
                at: datetime, specialist: str) -> dict[str, Any]:
    """Store the uploaded PDF and its DocumentReference (in our store); returns the latter."""
    file_id = uuid.uuid4().hex
    sha = hashlib.sha256(content).hexdigest()
    title = (filename or "consult-note.pdf")[:200]
    conn.execute(files.insert().values(
        id=file_id, referral_id=referral.id, sha256=sha, content_type="application/pdf",
        size=len(content), filename=title, content=content, created_at=at))
    document = {
        "resourceType": "DocumentReference", "id": f"upload-{file_id}",
        "identifier": [{"system": "urn:refloop:loop-file", "value": file_id}],
        "status": "current", "docStatus": "final",
        "type": {"coding": [CONSULT_NOTE]},
        "subject": {"reference": referral.patient},
        "date": instant(at),
        "description": f"Consult note uploaded by {specialist or 'the specialist'}'s office",
        "context": {"related": [{"reference": referral.service_request}]},
        "content": [{"attachment": {
            "contentType": "application/pdf", "url": f"{FILE_URL}{file_id}",
            "size": len(content), "title": title,
            "hash": base64.b64encode(hashlib.sha1(content).digest()).decode("ascii"),
            "creation": instant(at)}}],
    }
    return document


def as_link(document: dict[str, Any]) -> Link:
    return Link(LINK_CONSULT_NOTE, f"DocumentReference/{document['id']}", "consult note")
