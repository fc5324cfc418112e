"""Structured JSON logs: one object per line; no patient data at INFO, never tokens or secrets."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refloop.settings import Settings

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_SECRET_KEYS = re.compile(r"(token|secret|password|authorization|cookie|assertion|key)", re.I)
_BEARER = re.compile(r"(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.I)
#: secrets passed as URL query or form parameters (OAuth tokens, codes, client secrets...)
_PARAM = re.compile(r"((?:^|[?&;\s\"'])(?:access_token|id_token|refresh_token|token|client_secret|"
                    r"password|code|assertion|client_assertion|api_key|apikey)=)[^&\s\"';]+", re.I)
#: the same secrets as keys of a printed dict or JSON object ({'access_token': '...'}), as
#: libraries log them at DEBUG (authlib's "Issue token {...}")
_QUOTED = re.compile(r"""(['"](?:access_token|id_token|refresh_token|token|client_secret|"""
                     r"""password|code|assertion|client_assertion|api_key|apikey)['"]"""
                     r"""\s*:\s*['"])[^'"]+""", re.I)
#: a password inside a URL (postgresql://user:secret@host/db)
_URL_PASSWORD = re.compile(r"(\w+://[^/\s:@]+:)[^/\s@]+(@)")
#: a patient link's token in a path (/p/<256-bit token>); the pages' own names are short words
#: tokens in link paths: the patient booking link and the specialist/referrer loop links
#: (slashes doubled too: such a path is answered 404, not redirected, and may be logged)
_PATIENT_LINK = re.compile(r"(/p/+|/loop/[nu]/+)[A-Za-z0-9_-]{32,}")
#: a SMART session id in a page path (/smart/s/<id>/...): usable only with its cookie, but it
#: is the session's name and stays out of logs and quarantined request lines all the same
_SMART_SESSION = re.compile(r"(/smart/s/+)[A-Za-z0-9_-]{20,}")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = "[redacted]" if _SECRET_KEYS.search(key) else _plain(value)
        if record.exc_info:
            entry["error"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def redact_text(text: str) -> str:
    """`text` with bearer/basic credentials, secret URL parameters, patient link tokens, SMART
    session ids and URL passwords masked."""
    text = _BEARER.sub(r"\1 [redacted]", text)
    text = _PARAM.sub(r"\1[redacted]", text)
    text = _QUOTED.sub(r"\1[redacted]", text)
    text = _PATIENT_LINK.sub(r"\1[redacted]", text)
    text = _SMART_SESSION.sub(r"\1[redacted]", text)
    return _URL_PASSWORD.sub(r"\1[redacted]\2", text)


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: "[redacted]" if _SECRET_KEYS.search(str(k)) else _plain(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class RedactRequestLines(logging.Filter):
    """On werkzeug's logger: its development server logs each request line (the path with a
    patient link's token, a query's secrets) before any formatter of ours sees it; the record
    leaves here with the line already masked, whatever handler prints it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage()), ()
        return True


def redact_request_lines() -> None:
    """Install RedactRequestLines on werkzeug's logger (once): every app we build does, so a
    werkzeug server serving it (the demo, the tests' servers) never logs a token."""
    logger = logging.getLogger("werkzeug")
    if not any(isinstance(f, RedactRequestLines) for f in logger.filters):
        logger.addFilter(RedactRequestLines())


def log_file_for(settings: Settings, *, server: bool) -> Path | None:
    """Where this process logs: None for stderr. A server logs to stderr unless `log_file` names
    a file; a one-shot command (and the demo) to `log_file`, else <var_dir>/log/refloop.log,
    so its terminal shows only what it prints for people ("-" keeps stderr)."""
    if settings.log_file == "-":
        return None
    if settings.log_file:
        return Path(settings.log_file)
    return None if server else settings.var_dir / "log" / "refloop.log"


def configure_logging(level: str = "INFO", fmt: str = "json", file: Path | None = None) -> None:
    """JSON (or text) lines on stderr, or appended to `file` (its directory made; stderr when
    it cannot be opened)."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if file is not None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(file, encoding="utf-8")
        except OSError:
            pass
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "apscheduler", "werkzeug", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
