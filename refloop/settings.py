"""Typed settings from one TOML file plus `REFLOOP_*` environment variables (env wins).

Core settings are typed here. Each adapter reads its own table (`[hl7]`, `[pas]`, `[smart]`,
`[[fhir_servers]]`...) through `Settings.section()` into its own typed config.

Environment: `REFLOOP_DATABASE_URL`, `REFLOOP_HTTP_PORT`... map to top-level core keys;
`REFLOOP_<SECTION>__<KEY>` (two underscores) sets a key inside a section.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from referrals.errors import RefloopError

ENV_PREFIX = "REFLOOP_"


class SettingsError(RefloopError):
    """The configuration is wrong; the message says which key and what to do."""


@dataclass(frozen=True)
class Settings:
    var_dir: Path = Path("var")
    database_url: str = ""
    #: FULL: a commit (an inbound message we then acknowledge) survives power loss; NORMAL is
    #: several times faster on SQLite but may lose the last commits if the machine goes down.
    sqlite_synchronous: str = "FULL"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    #: the only source of absolute URLs (links, fullUrl, redirect URIs, token endpoint); the
    #: Host header never is. Required when http_host is not a loopback address.
    public_base_url: str = ""
    #: addresses or networks (CIDR) of the reverse proxies in front of us: only from these is
    #: X-Forwarded-For / X-Forwarded-Proto believed; from anyone else they are dropped
    trusted_proxies: tuple[str, ...] = ()
    web_workers: int = 2
    #: threads per web process for requests the edge hands to the WSGI application (complete
    #: requests only: a slow client never holds a thread)
    web_threads: int = 8
    #: the HTTP edge (docs/core.md "The web server"): a request's line, headers and body must
    #: all arrive within http_request_timeout seconds; an idle keep-alive connection is closed
    #: after http_keepalive_timeout; a source address may hold at most
    #: http_max_connections_per_source connections to one web process (0: no limit)
    http_request_timeout: float = 30.0
    http_keepalive_timeout: float = 15.0
    http_max_connections_per_source: int = 64
    http_max_connections: int = 4096
    http_max_body_bytes: int = 16 * 1024 * 1024
    worker_processes: int = 1
    #: work items a worker claims per round, for every kind; 0: each kind's own size (the
    #: `batch_size` its handler declares, else 10; referral notifications 100)
    worker_batch: int = 0
    lease_seconds: float = 60.0
    tick_seconds: float = 5.0
    log_level: str = "INFO"
    log_format: str = "json"
    #: where log lines go: "" = stderr for `refloop serve`, <var_dir>/log/refloop.log for the
    #: other commands (their terminal shows only what they print for people); a path = that
    #: file for everything; "-" = stderr for everything
    log_file: str = ""
    config_file: Path | None = None
    sections: dict[str, Any] = field(default_factory=dict)

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        path = (self.var_dir / "refloop.db").resolve()
        return f"sqlite:///{path}"

    @property
    def base_url(self) -> str:
        """The URL peers use to reach us (notifications, redirect URIs)."""
        return (self.public_base_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    def section(self, name: str) -> Any:
        """An adapter's table (dict) or array of tables (list); empty dict when absent."""
        return self.sections.get(name, {})

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)


CORE_KEYS = {f.name: f for f in fields(Settings) if f.name not in {"sections", "config_file"}}


def load_settings(path: Path | str | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Read `path` (or `REFLOOP_CONFIG`, or ./refloop.toml when present) and the environment."""
    env = dict(os.environ if environ is None else environ)
    chosen = Path(path) if path else Path(env["REFLOOP_CONFIG"]) if env.get("REFLOOP_CONFIG") \
        else (Path("refloop.toml") if Path("refloop.toml").exists() else None)
    data: dict[str, Any] = {}
    if chosen is not None:
        if not chosen.exists():
            raise SettingsError(f"configuration file {chosen} does not exist; create it or unset "
                                "REFLOOP_CONFIG")
        try:
            data = tomllib.loads(chosen.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{chosen}: not valid TOML: {exc}") from exc
    core: dict[str, Any] = {}
    origin: dict[str, str] = {}
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key in CORE_KEYS:
            core[key] = value
            origin[key] = f"{chosen}: {key}"
        elif isinstance(value, (dict, list)):
            sections[key] = value
        else:
            raise SettingsError(f"{chosen}: unknown setting {key!r}; known: "
                                f"{', '.join(sorted(CORE_KEYS))} and adapter tables")
    _apply_env(env, core, sections, origin)
    typed = {key: _coerce(key, value, origin[key]) for key, value in core.items()}
    settings = Settings(**typed, sections=sections, config_file=chosen)
    _check(settings, origin)
    return settings


def _apply_env(env: dict[str, str], core: dict[str, Any], sections: dict[str, Any],
               origin: dict[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == "REFLOOP_CONFIG":
            continue
        key = name.removeprefix(ENV_PREFIX).lower()
        if "__" in key:
            section, _, sub = key.partition("__")
            table = sections.setdefault(section, {})
            if not isinstance(table, dict):
                raise SettingsError(f"{name}: [{section}] is an array of tables in the "
                                    "configuration file; set its keys in the file instead")
            table[sub] = value
        elif key in CORE_KEYS:
            core[key] = value
            origin[key] = f"environment variable {name}"


def _coerce(key: str, value: Any, where: str) -> Any:
    kind = CORE_KEYS[key].type
    try:
        if kind in ("int", int):
            if isinstance(value, (float, bool)):
                raise ValueError(value)
            return int(value)
        if kind in ("float", float):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind in ("Path", Path):
            return Path(value)
        if str(kind).startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
                raise TypeError(value)
            return tuple(i.strip() for i in items if i.strip())
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{where}: {value!r} is not a valid {_KIND_WORDS.get(str(kind), kind)}"
                            f" for {key}") from exc


_KIND_WORDS = {"int": "whole number", "float": "number", "Path": "path", "str": "text",
               "tuple[str, ...]": "list of text (or comma-separated text)"}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def _check(settings: Settings, origin: dict[str, str]) -> None:
    """Reject values that would fail later, naming where they came from and what to use."""
    def fail(key: str, why: str) -> None:
        raise SettingsError(f"{origin.get(key, key)}: {why}")

    if not 0 <= settings.http_port <= 65535:
        fail("http_port", f"{settings.http_port} is not a TCP port (0-65535)")
    if settings.log_level.upper() not in _LOG_LEVELS:
        fail("log_level", f"{settings.log_level!r}; use one of {', '.join(_LOG_LEVELS)}")
    if settings.log_format not in ("json", "text"):
        fail("log_format", f"{settings.log_format!r}; use json or text")
    if settings.sqlite_synchronous.upper() not in _SYNCHRONOUS:
        fail("sqlite_synchronous", f"{settings.sqlite_synchronous!r}; use one of "
             f"{', '.join(_SYNCHRONOUS)}")
    url = settings.database_url
    if url and not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:",
                                   "postgres:")):
        fail("database_url", "use sqlite:///path/to/refloop.db or "
             "postgresql://user:password@host:port/dbname")
    for key in ("web_workers", "web_threads", "worker_processes",
                "http_max_connections", "http_max_body_bytes"):
        if getattr(settings, key) < 1:
            fail(key, "must be at least 1")
    if settings.worker_batch < 0:
        fail("worker_batch", "must be 0 (each work kind's own batch size) or more")
    for proxy in settings.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            fail("trusted_proxies", f"{proxy!r} is not an IP address or network "
                 "(e.g. 10.0.0.5 or 10.0.0.0/24)")
    base = urlsplit(settings.public_base_url)
    if settings.public_base_url and (base.scheme not in ("http", "https") or not base.netloc
                                     or base.query or base.fragment):
        fail("public_base_url", f"{settings.public_base_url!r}; use the scheme and host (and "
             "path) users reach, e.g. https://refloop.example.org")
    if settings.http_max_connections_per_source < 0:
        fail("http_max_connections_per_source", "must be 0 (no limit) or more")
    for key in ("lease_seconds", "tick_seconds", "http_request_timeout",
                "http_keepalive_timeout"):
        if getattr(settings, key) <= 0:
            fail(key, "must be more than 0 seconds")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_serving(settings: Settings) -> None:
    """Refuse to serve on a non-loopback address without public_base_url: the absolute URLs
    Refloop hands out (Bundle links, redirect URIs, the token endpoint) would otherwise name an
    address peers may not reach, and nothing else may decide them."""
    if not settings.public_base_url and not is_loopback(settings.http_host):
        raise SettingsError(
            f"http_host is {settings.http_host!r} (not loopback) but public_base_url is not set; "
            "set public_base_url to the https address users and peers reach (e.g. "
            "REFLOOP_PUBLIC_BASE_URL=https://refloop.example.org), or bind to 127.0.0.1 behind "
            "a reverse proxy on this host")
