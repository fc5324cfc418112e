"""Entity identifiers (EI: id ^ namespace id ^ universal id ^ type) as business keys.

A key is `id^namespace`, normalised before any matching: surrounding spaces go, and an id sent
without a namespace belongs to the sending application (MSH-3), because that is whose id it is.
A namespace may be written as the HD's namespace id or as its universal id (`ACMEEHR` or
`1.2.840.99`); when it names the sending application, every spelling of MSH-3 is a key too, so
`NC-R-55121` from `ACMEEHR^1.2.840.99^ISO` matches `NC-R-55121^ACMEEHR` and
`NC-R-55121^^1.2.840.99^ISO` written by anyone else.

`entity_keys` returns every spelling (the first is the primary key); a referral is indexed under
all of them and a message looks it up by any.
"""

from __future__ import annotations

from hl7_bridge.message import Message, Segment


def application_namespaces(msg: Message) -> tuple[str, ...]:
    """The sending application's namespace id and universal id (MSH-3.1, MSH-3.2)."""
    msh = msg.msh
    return _unique(msh.get(3, 1).strip(), msh.get(3, 2).strip())


def entity_keys(seg: Segment | None, number: int, application: tuple[str, ...], *,
                rep: int = 0, prefix: str = "") -> list[str]:
    """Every normalised key of the EI in `seg`-`number` (empty when it has no id)."""
    if seg is None:
        return []
    value = seg.get(number, 1, rep=rep).strip()
    if not value:
        return []
    named = _unique(seg.get(number, 2, rep=rep).strip(), seg.get(number, 3, rep=rep).strip())
    spaces = named or application
    if any(n in application for n in spaces):
        spaces = _unique(*spaces, *application)
    return [f"{prefix}{value}^{n}" for n in spaces] or [f"{prefix}{value}^"]


def first_keys(*found: list[str]) -> list[str]:
    """The first non-empty key list (the EI fields a message may carry, in order)."""
    return next((keys for keys in found if keys), [])


def _unique(*names: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for n in names if n))
