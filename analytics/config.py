"""The `[analytics]` table: how often the rollup reads the event log, and where the Prometheus
figures are served and kept."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from referrals.errors import RefloopError


class AnalyticsConfigError(RefloopError):
    """The [analytics] table is wrong; the message names the key and what to do."""


@dataclass(frozen=True)
class AnalyticsConfig:
    #: how often the rollup reads the event log (seconds); the dashboard lags by at most this
    rollup_seconds: float = 10.0
    #: the metrics role: Prometheus's exposition on its own address, off the public port
    #: (0: no such role; /metrics on the public port needs a token with `metrics:read`)
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    #: where each process of `refloop serve` keeps its counters (prometheus_client's
    #: multi-process files); "" = <var_dir>/metrics
    metrics_dir: Path | None = None


def from_section(section: dict[str, Any], var_dir: Path) -> AnalyticsConfig:
    known = {"rollup_seconds", "metrics_port", "metrics_host", "metrics_dir"}
    unknown = set(section) - known
    if unknown:
        raise AnalyticsConfigError(f"[analytics] has unknown keys {sorted(unknown)}; known: "
                                   f"{', '.join(sorted(known))}")
    try:
        seconds = float(section.get("rollup_seconds", 10.0))
        port = int(section.get("metrics_port", 0))
    except (TypeError, ValueError) as exc:
        raise AnalyticsConfigError(f"[analytics]: {exc}; rollup_seconds is a number of seconds "
                                   "and metrics_port a port number") from exc
    if seconds <= 0:
        raise AnalyticsConfigError("[analytics] rollup_seconds must be more than 0")
    if not 0 <= port <= 65535:
        raise AnalyticsConfigError("[analytics] metrics_port must be 0 (off) or a port number")
    directory = str(section.get("metrics_dir") or "")
    return AnalyticsConfig(rollup_seconds=seconds, metrics_port=port,
                           metrics_host=str(section.get("metrics_host") or "127.0.0.1"),
                           metrics_dir=Path(directory) if directory else var_dir / "metrics")
