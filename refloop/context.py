"""The CLI context: settings and services built on first use, shared by every sub-command.

Adapter commands (declared by the wiring modules) take it with `@pass_context`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from refloop.settings import Settings, load_settings


class Context:
    """Settings and services, built on first use so `--help` needs no database."""

    def __init__(self, config: Path | None) -> None:
        self.config = config
        self._settings: Settings | None = None
        self._services: Any = None
        self.log_file: Path | None = None
        self._logging = False

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings

    def configure_logging(self, *, server: bool = False) -> Path | None:
        """Log lines to stderr (a server) or to the log file (a one-shot command: its terminal
        shows only what it prints for people); returns the file, None for stderr."""
        from refloop.logs import configure_logging, log_file_for

        self.log_file = log_file_for(self.settings, server=server)
        configure_logging(self.settings.log_level, self.settings.log_format, self.log_file)
        self._logging = True
        return self.log_file

    @property
    def services(self) -> Any:
        if self._services is None:
            from referrals.store.migrate import pending
            from refloop.services import build_services

            if not self._logging:
                self.configure_logging()
            self._services = build_services(self.settings)
            missing = pending(self._services.db)
            if missing:
                raise click.ClickException(
                    f"the database schema is not current (pending: {', '.join(missing)}); "
                    "run 'refloop db upgrade'")
        return self._services


pass_context = click.make_pass_decorator(Context)
