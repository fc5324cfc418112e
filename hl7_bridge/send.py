"""Reading an ACK for people and scripts (`refloop hl7 send`)."""

from __future__ import annotations

from typing import Any

from hl7_bridge.header import HeaderError, parse_header


def summarise_ack(answer: bytes) -> dict[str, Any]:
    """MSA-1 code, MSA-2 control id, and the error texts (MSA-3 and ERR-8/ERR-7)."""
    try:
        separator = parse_header(answer).field_separator
    except HeaderError:
        return {"code": "", "control_id": "", "text": "unreadable ACK", "errors": []}
    code = control = text = ""
    errors: list[str] = []
    for line in answer.replace(b"\n", b"\r").split(b"\r"):
        parts = line.decode("latin-1").split(separator)
        if parts[0] == "MSA":
            code = parts[1] if len(parts) > 1 else ""
            control = parts[2] if len(parts) > 2 else ""
            text = parts[3] if len(parts) > 3 else ""
        elif parts[0] == "ERR":
            errors.append(separator.join(parts[1:]))
    return {"code": code, "control_id": control, "text": text, "errors": errors}
