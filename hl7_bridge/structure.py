"""Message structure from the trigger event (HL7 table 0354), whatever MSH-9.3 says."""

from __future__ import annotations

_GROUPS: dict[str, tuple[str, ...]] = {
    "ADT_A01": ("ADT_A01", "ADT_A04", "ADT_A08", "ADT_A13"),
    "ADT_A05": ("ADT_A05", "ADT_A14", "ADT_A28", "ADT_A31"),
    "ADT_A39": ("ADT_A39", "ADT_A40", "ADT_A41", "ADT_A42"),
    "REF_I12": ("REF_I12", "REF_I13", "REF_I14", "REF_I15"),
    "RRI_I12": ("RRI_I12", "RRI_I13", "RRI_I14", "RRI_I15"),
    "SIU_S12": tuple(f"SIU_S{n}" for n in range(12, 27)),
    "MDM_T01": ("MDM_T01", "MDM_T03", "MDM_T05", "MDM_T07", "MDM_T09", "MDM_T11"),
    "MDM_T02": ("MDM_T02", "MDM_T04", "MDM_T06", "MDM_T08", "MDM_T10"),
    "ORU_R01": ("ORU_R01",),
    "OMG_O19": ("OMG_O19",),
    "ORM_O01": ("ORM_O01",),
    "ACK": ("ACK",),
}

TABLE_0354 = {event: structure for structure, events in _GROUPS.items() for event in events}


def structure_of(message_type: str, trigger: str) -> str | None:
    """`REF`, `I14` -> `REF_I12`; None when the event is not one we know."""
    if message_type == "ACK":
        return "ACK"
    return TABLE_0354.get(f"{message_type}_{trigger}")

#: message type -> trigger events the bridge maps; anything else gets AR (ERR 200/201).
SUPPORTED: dict[str, frozenset[str]] = {
    "ADT": frozenset({"A01", "A04", "A08", "A28", "A31", "A40"}),
    "REF": frozenset({"I12", "I13", "I14", "I15"}),
    "RRI": frozenset({"I12", "I13", "I14", "I15"}),
    "OMG": frozenset({"O19"}),
    "ORM": frozenset({"O01"}),
    "SIU": frozenset({"S12", "S13", "S14", "S15", "S16", "S17", "S26"}),
    "MDM": frozenset({"T02", "T04", "T06", "T08", "T10", "T11"}),
    "ORU": frozenset({"R01"}),
}

#: segments without which a structure cannot be mapped (checked on the ACK path, cheaply).
REQUIRED: dict[str, tuple[str, ...]] = {
    "ADT_A01": ("PID",), "ADT_A05": ("PID",), "ADT_A39": ("PID", "MRG"),
    "REF_I12": ("PID",), "RRI_I12": ("RF1",), "OMG_O19": ("ORC", "OBR"),
    "ORM_O01": ("ORC",), "SIU_S12": ("SCH",), "MDM_T02": ("PID", "TXA", "OBX"),
    "MDM_T01": ("PID", "TXA"), "ORU_R01": ("OBR",),
}

SUPPORTED_VERSIONS = frozenset({"2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6",
                                "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2", "2.9"})
