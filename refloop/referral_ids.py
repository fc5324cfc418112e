"""Referral ids (and other uuid ids) on the command line: a full id, the short id the listings
print (a referral's last 8 characters, referrals/ids.py), or any unique beginning of one.

A referral's beginning needs a short id's length too: listings show the end, and a few
characters typed from it (`cafe` of `...0000cafe`) must not name an older referral whose id
happens to begin with them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from referrals.ids import SHORT
from refloop.context import Context

#: how many matches an ambiguous prefix names
SHOWN = 5


def resolve_referral_id(store: Any, text: str) -> str:
    """The full id `text` names: itself when it exists, else the one id it ends or begins (at
    least a short id's length of either); a ClickException that says what to do when it names
    none or several."""
    def starting_with(prefix: str, limit: int) -> list[str]:
        return store.ids_starting_with(prefix, limit=limit) if len(prefix) >= SHORT else []

    return resolve_id(text, exists=lambda i: store.try_get(i) is not None,
                      starting_with=starting_with, ending_with=store.ids_ending_with,
                      noun="referral", listing="'refloop referrals list' shows their ids")


def resolve_id(text: str, *, exists: Callable[[str], bool],
               starting_with: Callable[..., list[str]], noun: str, listing: str,
               ending_with: Callable[..., list[str]] | None = None) -> str:
    """The full id of a `noun` that `text` names (itself, the one id it begins or, with
    `ending_with`, the one id it ends); `listing` says where people find the ids."""
    text = text.strip()
    if exists(text):
        return text
    begun = starting_with(text, limit=SHOWN + 1)
    ended = ending_with(text, limit=SHOWN + 1) if ending_with is not None else []
    found = list(dict.fromkeys([*begun, *ended]))
    if len(found) == 1:
        return str(found[0])
    if not found:
        unique = (f"a short id, or a unique beginning of {SHORT} characters or more, is "
                  "enough" if ending_with else "a unique beginning of one is enough")
        raise click.ClickException(f"no {noun} {_cut(text)}; {listing} ({unique})")
    count = f"more than {SHOWN}" if len(found) > SHOWN else str(len(found))
    shown = ", ".join(found[:SHOWN]) + (", ..." if len(found) > SHOWN else "")
    where = ("begin or end with" if begun and ended else "end with" if ended
             else "begin with")
    raise click.ClickException(f"{_cut(text)} is ambiguous: {count} {noun} ids {where} it "
                               f"({shown}); give more of the id")


def _cut(text: str) -> str:
    """What an error repeats of the text given: an id's length at most."""
    return text if len(text) <= 40 else f"{text[:36]}..."


class ReferralId(click.ParamType):
    """A click argument that accepts a referral id, its short id or a unique beginning of
    one."""

    name = "REFERRAL"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        obj = ctx.find_object(Context) if ctx is not None else None
        if obj is None:
            return str(value)
        return resolve_referral_id(obj.services.store, str(value))


REFERRAL = ReferralId()
