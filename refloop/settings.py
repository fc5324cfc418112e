"""Typed settings from one TOML file plus `REFLOOP_*` environment variables (env wins).

Core settings are typed here. Each adapter reads its own table (`[hl7]`, `[pas]`, `[smart]`,
`[[fhir_servers]]`...) through `Settings.section()` into its own typed config.

Environment: `REFLOOP_DATABASE_URL`, `REFLOOP_HTTP_PORT`... map to top-level core keys;
`REFLOOP_<SECTION>__<KEY>` (two underscores) sets a key inside a section.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from referrals.errors import RefloopError

ENV_PREFIX = "REFLOOP_"


class SettingsError(RefloopError):
    """The configuration is wrong; the message says which key and what to do."""


@dataclass(frozen=True)
class Settings:
    var_dir: Path = Path("var")
    database_url: str = ""
    sqlite_synchronous: str = "NORMAL"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_base_url: str = ""
    web_workers: int = 2
    worker_processes: int = 1
    worker_batch: int = 10
    lease_seconds: float = 60.0
    tick_seconds: float = 5.0
    log_level: str = "INFO"
    log_format: str = "json"
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
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key in CORE_KEYS:
            core[key] = value
        elif isinstance(value, (dict, list)):
            sections[key] = value
        else:
            raise SettingsError(f"{chosen}: unknown setting {key!r}; known: "
                                f"{', '.join(sorted(CORE_KEYS))} and adapter tables")
    _apply_env(env, core, sections)
    typed = {key: _coerce(key, value) for key, value in core.items()}
    return Settings(**typed, sections=sections, config_file=chosen)


def _apply_env(env: dict[str, str], core: dict[str, Any], sections: dict[str, Any]) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == "REFLOOP_CONFIG":
            continue
        key = name.removeprefix(ENV_PREFIX).lower()
        if "__" in key:
            section, _, sub = key.partition("__")
            table = sections.setdefault(section, {})
            if isinstance(table, dict):
                table[sub] = value
        elif key in CORE_KEYS:
            core[key] = value


def _coerce(key: str, value: Any) -> Any:
    kind = CORE_KEYS[key].type
    try:
        if kind in ("int", int):
            return int(value)
        if kind in ("float", float):
            return float(value)
        if kind in ("Path", Path):
            return Path(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {key}: {value!r} is not a valid {kind}") from exc
