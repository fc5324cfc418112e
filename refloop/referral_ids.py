"""Referral ids on the command line: a full id, or any unique beginning of one (the listings
print the first 8 characters)."""

from __future__ import annotations

from typing import Any

import click

from refloop.context import Context

#: how many matches an ambiguous prefix names
SHOWN = 5


def resolve_referral_id(store: Any, text: str) -> str:
    """The full id `text` names: itself when it exists, else the one id it begins; a
    ClickException that says what to do when it names none or several."""
    text = text.strip()
    if store.try_get(text) is not None:
        return text
    found = store.ids_starting_with(text, limit=SHOWN + 1)
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise click.ClickException(f"no referral {text}; 'refloop referrals list' shows their "
                                   "ids (a unique beginning of one is enough)")
    count = f"more than {SHOWN}" if len(found) > SHOWN else str(len(found))
    shown = ", ".join(found[:SHOWN]) + (", ..." if len(found) > SHOWN else "")
    raise click.ClickException(f"{text} is ambiguous: {count} referral ids begin with it "
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
