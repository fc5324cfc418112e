"""The Prometheus exposition (prometheus-client; the one module that imports it).

Two kinds of figures:

- read from the store at scrape time (analytics/operations.py): inbox, work queue, quarantine,
  what the adapters decided. The same from every process and node;
- counted by the processes that do the work: work items handled per kind and outcome, and how
  long they took (`observe_work`). Under `refloop serve` every process writes its counts to
  files in one directory (prometheus-client's multi-process mode, `PROMETHEUS_MULTIPROC_DIR`,
  chosen before prometheus-client is first imported: see `prepare_directory`), and a scrape of
  any web process, or of the metrics role, sums them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from analytics.operations import Operations

log = logging.getLogger("refloop.metrics")
PREFIX = "refloop_"
ENV = "PROMETHEUS_MULTIPROC_DIR"
WORK_OUTCOMES = ("done", "retry", "quarantined", "postponed", "lost")


def prepare_directory(directory: Path) -> Path:
    """Make this process (and the processes it starts) count into `directory`, unless the
    operator chose one in PROMETHEUS_MULTIPROC_DIR; remove the files of processes that are no
    longer running (a restart starts the counters again, which Prometheus's rate() expects).
    Call before prometheus-client is imported."""
    chosen = Path(os.environ.get(ENV) or directory)
    chosen.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(chosen)
    for path in chosen.glob("*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
    return chosen


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProcessMetrics:
    """Counters of this process (one set per process: prometheus-client's registry is global)."""

    _lock = threading.Lock()
    _made: ProcessMetrics | None = None

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.work = Counter(f"{PREFIX}work_items", "Work items handled by this node's workers, "
                            "by kind and outcome (done, retry, quarantined, postponed, lost)",
                            ("kind", "outcome"), registry=self.registry)
        self.seconds = Histogram(f"{PREFIX}work_seconds", "Time to handle a work item",
                                 ("kind",), registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                          10, 30, 60))

    @classmethod
    def get(cls) -> ProcessMetrics:
        with cls._lock:
            if cls._made is None:
                cls._made = cls()
            return cls._made


def observe_work(kind: str, outcome: str, seconds: float) -> None:
    """A worker handled one item (referrals.worker.Worker's `observe`)."""
    metrics = ProcessMetrics.get()
    metrics.work.labels(kind, outcome).inc()
    metrics.seconds.labels(kind).observe(seconds)


class StoreCollector:
    """prometheus-client collector over Operations.figures()."""

    def __init__(self, operations: Operations) -> None:
        self.operations = operations

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for figure in self.operations.figures():
            family: Any = (CounterMetricFamily if figure.kind == "counter"
                           else GaugeMetricFamily)(PREFIX + figure.name, figure.documentation,
                                                   labels=list(figure.labels))
            for labels, value in figure.samples:
                family.add_metric(list(labels), value)
            yield family

    def describe(self) -> list[Any]:
        return []


class _ThisProcess:
    def collect(self) -> Iterator[Any]:
        yield from ProcessMetrics.get().registry.collect()

    def describe(self) -> list[Any]:
        return []


def exposition(operations: Operations, directory: Path | None) -> tuple[bytes, str]:
    """The text exposition: the store's figures, and the processes' counters (summed over the
    multi-process directory when there is one, else this process's own)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(operations))
    chosen = os.environ.get(ENV) or directory
    shared = Path(chosen) if chosen else None
    if shared is not None and shared.is_dir():
        MultiProcessCollector(registry, path=str(shared))
    if not os.environ.get(ENV):  # this process's counters are not in the files
        registry.register(_ThisProcess())
    return generate_latest(registry), CONTENT_TYPE_LATEST
