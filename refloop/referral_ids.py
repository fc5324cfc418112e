"""Referral ids (and other uuid ids) on the command line: a full id, or any unique beginning of
one (the listings print the first 8 characters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from refloop.context import Context

#: how many matches an ambiguous prefix names
SHOWN = 5


def resolve_referral_id(store: Any, text: str) -> str:
    """The full id `text` names: itself when it exists, else the one id it begins; a
    ClickException that says what to do when it names none or several."""
    return resolve_id(text, exists=lambda i: store.try_get(i) is not None,
                      starting_with=store.ids_starting_with, noun="referral",
                      listing="'refloop referrals list' shows their ids")


def resolve_id(text: str, *, exists: Callable[[str], bool],
               starting_with: Callable[..., list[str]], noun: str, listing: str) -> str:
    """The full id of a `noun` that `text` names (itself, or the one id it begins);
    `listing` says where people find the ids."""
    text = text.strip()
    if exists(text):
        return text
    found = starting_with(text, limit=SHOWN + 1)
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise click.ClickException(f"no {noun} {text}; {listing} (a unique beginning of one "
                                   "is enough)")
    count = f"more than {SHOWN}" if len(found) > SHOWN else str(len(found))
    shown = ", ".join(found[:SHOWN]) + (", ..." if len(found) > SHOWN else "")
    raise click.ClickException(f"{text} is ambiguous: {count} {noun} ids begin with it "
                               f"({shown}); give more of the id")


class ReferralId(click.ParamType):
    """A click argument that accepts a referral id or a unique beginning of one."""

    name = "REFERRAL"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        obj = ctx.find_object(Context) if ctx is not None else None
        if obj is None:
            return str(value)
        return resolve_referral_id(obj.services.store, str(value))


REFERRAL = ReferralId()
