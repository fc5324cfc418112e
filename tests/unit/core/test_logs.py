"""JSON logs: one object per line, extra fields kept, tokens and secrets never written."""

from __future__ import annotations

import io
import json
import logging

from refloop.logs import JsonFormatter, RedactRequestLines, configure_logging, redact_text

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


def record(message: str, **extra: object) -> dict:
    logger = logging.getLogger("refloop.test")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.info(message, extra=extra)
    finally:
        logger.removeHandler(handler)
    [line] = stream.getvalue().splitlines()
    return json.loads(line)


def test_one_json_object_with_extra_fields() -> None:
    entry = record("work done", referral_id="r1", attempt=2)
    assert entry["msg"] == "work done" and entry["level"] == "info"
    assert entry["logger"] == "refloop.test" and entry["referral_id"] == "r1"
    assert entry["attempt"] == 2 and entry["at"].endswith("+00:00")


def test_tokens_never_reach_the_log() -> None:
    entry = record(f"sent with Authorization: Bearer {TOKEN}",
                   url=f"https://ehr.example.org/fhir/Patient?access_token={TOKEN}&x=1",
                   access_token=TOKEN, headers={"Authorization": f"Bearer {TOKEN}", "X": "y"},
                   database="postgresql://refloop:hunter2@db/refloop",
                   exchange=[f"code={TOKEN}"])
    text = json.dumps(entry)
    assert TOKEN not in text and "hunter2" not in text
    assert entry["access_token"] == "[redacted]"
    assert entry["headers"] == {"Authorization": "[redacted]", "X": "y"}
    assert entry["url"].endswith("access_token=[redacted]&x=1")
    assert entry["database"] == "postgresql://refloop:[redacted]@db/refloop"


def test_redact_text_keeps_ordinary_text() -> None:
    assert redact_text("referral r1 accepted; state=ok") == "referral r1 accepted; state=ok"
    assert redact_text(f"Basic {TOKEN}") == "Basic [redacted]"
    assert redact_text(f"POST /token client_secret={TOKEN}") == \
        "POST /token client_secret=[redacted]"


def test_exceptions_are_redacted_too() -> None:
    logger = logging.getLogger("refloop.test.exc")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        raise RuntimeError(f"401 for Bearer {TOKEN}")
    except RuntimeError:
        logger.exception("call failed")
    finally:
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert TOKEN not in entry["error"] and "Bearer [redacted]" in entry["error"]


def test_configure_logging_installs_json_on_the_root() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("WARNING", "json")
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.WARNING
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])


def test_patient_link_tokens_are_masked_in_paths_and_request_lines() -> None:
    token = "q8Xk2vR0bN5mW1zY7cL3pH9tJ4sD6fG0aE2uI8oK1nM"
    assert redact_text(f"GET /p/{token} HTTP/1.1") == "GET /p/[redacted] HTTP/1.1"
    assert token not in redact_text(f"see https://clinic.example/p/{token}?offer=9")
    for kept in ("/p/home", "/p/static/patient.css", "/p/slots?after=2027-01-01", "/p/lang/es"):
        assert redact_text(f"GET {kept} HTTP/1.1") == f"GET {kept} HTTP/1.1"
    line = logging.LogRecord("werkzeug", logging.INFO, "", 0, '%s - - "%s" %s',
                             ("127.0.0.1", f"GET /p/{token} HTTP/1.1", "200"), None)
    assert RedactRequestLines().filter(line)
    assert line.getMessage() == '127.0.0.1 - - "GET /p/[redacted] HTTP/1.1" 200'


def test_loop_link_tokens_are_masked_like_patient_links() -> None:
    token = "A" * 43
    assert redact_text(f"POST /loop/n/{token}?") == "POST /loop/n/[redacted]?"
    assert redact_text(f"GET /loop/u/{token} HTTP/1.1") == "GET /loop/u/[redacted] HTTP/1.1"
    assert redact_text(f"GET /loop/n//{token}/ HTTP/1.1") == "GET /loop/n//[redacted]/ HTTP/1.1"
    assert redact_text(f"GET /p//{token}/ HTTP/1.1") == "GET /p//[redacted]/ HTTP/1.1"


def test_tokens_in_a_printed_dict_are_masked() -> None:
    """authlib logs each token it issues at DEBUG as a dict; that form is masked too."""
    issued = {"token_type": "Bearer", "access_token": TOKEN, "expires_in": 300}
    entry = record(f"Issue token {issued} to Client(client_id='c1')")
    assert TOKEN not in json.dumps(entry)
    assert "'token_type': 'Bearer'" in entry["msg"] and "'expires_in': 300" in entry["msg"]
    assert TOKEN not in redact_text(json.dumps({"refresh_token": TOKEN, "id_token": TOKEN}))
