"""The patient's time zone(s): a stated zone, else the address (US state), else the phone's area
code, else the practice's default. Where a state spans zones, every candidate is kept and a send
must fit the window in all of them (47 CFR 64.1200(c)(1): 8 a.m. to 9 p.m. at the called party's
location).

State zones follow 49 CFR Part 71 and the IANA tz zone.tab; the multi-zone states list every zone
a resident may be in, the zone of most residents first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TIMEZONE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/timezone"

E, C, M, P = "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"

STATE_ZONES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(["CT", "DE", "DC", "GA", "ME", "MD", "MA", "NH", "NJ", "NY", "NC", "OH",
                     "PA", "RI", "SC", "VT", "VA", "WV"], (E,)),
    "MI": ("America/Detroit", "America/Menominee"),
    "IN": ("America/Indiana/Indianapolis", C),
    "KY": (E, C), "FL": (E, C), "TN": (C, E),
    **dict.fromkeys(["AL", "AR", "IL", "IA", "LA", "MN", "MS", "MO", "OK", "WI"], (C,)),
    "KS": (C, M), "NE": (C, M), "ND": (C, M), "SD": (C, M), "TX": (C, M),
    **dict.fromkeys(["CO", "MT", "NM", "UT", "WY"], (M,)),
    "ID": ("America/Boise", P), "OR": (P, "America/Boise"), "NV": (P, M),
    "AZ": ("America/Phoenix", M),
    **dict.fromkeys(["CA", "WA"], (P,)),
    "AK": ("America/Anchorage", "America/Adak"),
    "HI": ("Pacific/Honolulu",),
    "PR": ("America/Puerto_Rico",), "VI": ("America/St_Thomas",), "GU": ("Pacific/Guam",),
    "MP": ("Pacific/Saipan",), "AS": ("Pacific/Pago_Pago",),
}

STATE_NAMES = {"ALABAMA": "AL", "ALASKA": "AK", "ARIZONA": "AZ", "ARKANSAS": "AR",
               "CALIFORNIA": "CA", "COLORADO": "CO", "CONNECTICUT": "CT", "DELAWARE": "DE",
               "FLORIDA": "FL", "GEORGIA": "GA", "HAWAII": "HI", "IDAHO": "ID",
               "ILLINOIS": "IL", "INDIANA": "IN", "IOWA": "IA", "KANSAS": "KS",
               "KENTUCKY": "KY", "LOUISIANA": "LA", "MAINE": "ME", "MARYLAND": "MD",
               "MASSACHUSETTS": "MA", "MICHIGAN": "MI", "MINNESOTA": "MN", "MISSISSIPPI": "MS",
               "MISSOURI": "MO", "MONTANA": "MT", "NEBRASKA": "NE", "NEVADA": "NV",
               "NEW HAMPSHIRE": "NH", "NEW JERSEY": "NJ", "NEW MEXICO": "NM", "NEW YORK": "NY",
               "NORTH CAROLINA": "NC", "NORTH DAKOTA": "ND", "OHIO": "OH", "OKLAHOMA": "OK",
               "OREGON": "OR", "PENNSYLVANIA": "PA", "RHODE ISLAND": "RI",
               "SOUTH CAROLINA": "SC", "SOUTH DAKOTA": "SD", "TENNESSEE": "TN", "TEXAS": "TX",
               "UTAH": "UT", "VERMONT": "VT", "VIRGINIA": "VA", "WASHINGTON": "WA",
               "WEST VIRGINIA": "WV", "WISCONSIN": "WI", "WYOMING": "WY",
               "DISTRICT OF COLUMBIA": "DC", "PUERTO RICO": "PR"}

#: 3-digit ZIP prefixes that lie wholly in one zone of a multi-zone state
ZIP_PREFIX_ZONES: dict[str, str] = {
    **dict.fromkeys(["324", "325"], C),  # Florida panhandle west of the Apalachicola
    "799": M,                            # El Paso
    "979": "America/Boise",              # eastern Oregon (Malheur County)
    "838": P,                            # northern Idaho panhandle
    **dict.fromkeys(["463", "464", "476", "477"], C),      # Indiana's NW and SW corners
    **dict.fromkeys(["420", "421", "423", "424"], C),  # western Kentucky
    **dict.fromkeys(["370", "371", "372", "380", "381", "382", "383", "384", "385"], C),
    **dict.fromkeys(["373", "374", "376", "377", "378", "379"], E),  # east Tennessee
}

US = {"US", "USA", "UNITED STATES", "UNITED STATES OF AMERICA"}


@dataclass(frozen=True)
class Zones:
    zones: tuple[str, ...]
    source: str  # stated | address | phone | default


def resolve(patient: dict[str, Any] | None, phone_zones: Sequence[str], default: str) -> Zones:
    """The zones to respect for this patient, and where they came from."""
    patient = patient or {}
    for ext in patient.get("extension") or []:
        if ext.get("url") == TIMEZONE_EXTENSION and ext.get("valueCode"):
            return Zones((str(ext["valueCode"]),), "stated")
    from_address = address_zones(patient)
    if from_address:
        return Zones(from_address, "address")
    usable = [z for z in phone_zones if z and z != "Etc/Unknown"]
    if 0 < len(usable) <= 3:
        return Zones(tuple(usable), "phone")
    return Zones((default,), "default")


def address_zones(patient: dict[str, Any]) -> tuple[str, ...]:
    for address in _current_addresses(patient):
        country = str(address.get("country") or "US").strip().upper()
        if country not in US:
            continue
        state = str(address.get("state") or "").strip().upper()
        state = STATE_NAMES.get(state, state)
        zones = STATE_ZONES.get(state)
        if not zones:
            continue
        postal = str(address.get("postalCode") or "").strip()[:3]
        if len(zones) > 1 and postal in ZIP_PREFIX_ZONES and ZIP_PREFIX_ZONES[postal] in zones:
            return (ZIP_PREFIX_ZONES[postal],)
        return zones  # a ZIP we cannot place keeps every zone of the state
    return ()


def _current_addresses(patient: dict[str, Any]) -> list[dict[str, Any]]:
    addresses = [a for a in patient.get("address") or [] if a.get("use") != "old"
                 and not (a.get("period") or {}).get("end")]
    return sorted(addresses, key=lambda a: {"home": 0, "temp": 1}.get(a.get("use", ""), 2))
