"""The text of the mail the loop sends to providers' offices: the request for a consult note
(with the upload link), the link to a consult note, and the referrer's daily digest.

The minimum necessary: no patient name, birth date or diagnosis in a mail. The referral is
named by our reference and the referrer's own order, which their system knows; the patient is
shown only behind the link (initials and birth year on the upload page, the note itself after
the date-of-birth check)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from referrals.ids import short_id
from referrals.model import Referral


@dataclass(frozen=True)
class Letter:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class DigestLine:
    referral: str
    order: str
    specialty: str
    text: str
    at: datetime


def short(referral_id: str) -> str:
    """The reference people read out: the referral's short id (its last 8 characters)."""
    return short_id(referral_id).upper()


def order_of(referral: Referral) -> str:
    """The referrer's own order: the ServiceRequest id (or the v2 placer number)."""
    if referral.source_key.startswith("hl7|"):
        return referral.source_key.split("|", 2)[2].split("^")[0]
    return referral.service_request.rsplit("/", 1)[-1]


def upload_request(referral: Referral, *, link: str, expires: datetime, visit_at: datetime,
                   sender: str) -> Letter:
    ref = short(referral.id)
    what = referral.specialty or "specialist"
    subject = f"Consult note requested: referral {ref}"
    text = (f"Hello,\n\nThe patient referred to you for a {what} visit (our referral {ref}) "
            f"was seen on {visit_at:%d %b %Y}. We have not received the consult note.\n\n"
            f"Please upload it (PDF) here:\n{link}\n\n"
            f"The link is for this referral only and works until {expires:%d %b %Y}. "
            f"If you already sent the note, you can ignore this mail.\n\n{sender}\n")
    html = (f"<p>Hello,</p><p>The patient referred to you for a {escape(what)} visit (our "
            f"referral {ref}) was seen on {visit_at:%d %b %Y}. We have not received the "
            f"consult note.</p><p><a href=\"{escape(link)}\">Upload the consult note (PDF)</a>"
            f"</p><p>The link is for this referral only and works until "
            f"{expires:%d %b %Y}. If you already sent the note, you can ignore this mail.</p>"
            f"<p>{escape(sender)}</p>")
    return Letter(subject, text, html)


def note_link(referral: Referral, *, link: str, expires: datetime, sender: str) -> Letter:
    ref, order = short(referral.id), order_of(referral)
    subject = f"Consult note available: your order {order}"
    text = (f"Hello,\n\nThe specialist's consult note for your referral (your order {order}, "
            f"our referral {ref}) is available:\n{link}\n\n"
            f"You will be asked for the patient's date of birth. The link works until "
            f"{expires:%d %b %Y}.\n\n{sender}\n")
    html = (f"<p>Hello,</p><p>The specialist's consult note for your referral (your order "
            f"{escape(order)}, our referral {ref}) is available.</p>"
            f"<p><a href=\"{escape(link)}\">Read the consult note</a></p>"
            f"<p>You will be asked for the patient's date of birth. The link works until "
            f"{expires:%d %b %Y}.</p><p>{escape(sender)}</p>")
    return Letter(subject, text, html)


def digest(referrer: str, day: str, lines: Sequence[DigestLine], sender: str) -> Letter:
    subject = f"Referral updates for {day}: {len(lines)} change{'s' if len(lines) != 1 else ''}"
    rows = [f"- Your order {line.order} ({line.specialty or 'referral'}, our referral "
            f"{short(line.referral)}): {line.text}" for line in lines]
    text = ("Hello,\n\nWhat happened to your referrals since the last update:\n\n"
            + "\n".join(rows) + f"\n\n{sender}\n")
    items = "".join(f"<li>Your order {escape(line.order)} "
                    f"({escape(line.specialty or 'referral')}, our referral "
                    f"{short(line.referral)}): {escape(line.text)}</li>" for line in lines)
    html = (f"<p>Hello,</p><p>What happened to your referrals since the last update:</p>"
            f"<ul>{items}</ul><p>{escape(sender)}</p>")
    return Letter(subject, text, html)
