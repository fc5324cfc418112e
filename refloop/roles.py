"""Process roles: web (gunicorn), worker (+ scheduler), and adapter roles such as mllp.

`refloop serve` runs every role as a child process and stops them together; `--role` runs one.
"""

from __future__ import annotations

import gc
import logging
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from gunicorn.app.base import BaseApplication

from refloop.settings import Settings

log = logging.getLogger("refloop.serve")

#: exit code of a role that could not start (e.g. its port is taken); `supervise` keeps the
#: other roles running
ROLE_CANNOT_START = 3


class WebApplication(BaseApplication):
    """Gunicorn's master with the edge worker (refloop/edge/worker.py) in each worker process:
    each runs the HTTP edge on an event loop around the Flask app (built after the fork)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        self.cfg.set("bind", f"{self.settings.http_host}:{self.settings.http_port}")
        self.cfg.set("workers", self.settings.web_workers)
        self.cfg.set("worker_class", "refloop.edge.worker.EdgeWorker")
        self.cfg.set("accesslog", None)
        if self.settings.log_file not in ("", "-"):  # gunicorn's own lines go with ours
            self.cfg.set("errorlog", self.settings.log_file)
        self.cfg.set("timeout", 60)
        self.cfg.set("graceful_timeout", 10)  # within the supervisor's 15 s stop window

    def load(self) -> Any:
        from refloop.app import create_edge_app
        from refloop.services import build_services

        return create_edge_app(build_services(self.settings))


def run_web(settings: Settings) -> None:
    WebApplication(settings).run()


def tune_gc() -> None:
    """For long-running workers: the objects of start-up (imports, services) leave the
    collector's view, and young collections run less often. A mapping batch allocates many
    short-lived objects; with the defaults the collector rescanned everything every few
    messages and took a third of the worker's time (measured with bench/mllp.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(500_000, 10, 10)


def run_worker(settings: Settings, stop: threading.Event | None = None) -> None:
    from referrals.worker import Worker
    from refloop.scheduler import start_scheduler
    from refloop.services import build_services
    from refloop.wiring import all_handlers, all_timers, work_observer

    services = build_services(settings)
    tune_gc()
    stop = stop or _stop_on_signals()
    scheduler = start_scheduler(services.work, all_timers(services), settings.tick_seconds)
    observe = work_observer(services)
    threads = [
        threading.Thread(target=Worker(services.work, all_handlers(services),
                                       batch=settings.worker_batch, observe=observe).run,
                         args=(stop,),
                         name=f"worker-{n}", daemon=True)
        for n in range(max(1, settings.worker_processes))
    ]
    for thread in threads:
        thread.start()
    stop.wait()
    scheduler.shutdown(wait=False)
    for thread in threads:
        thread.join(timeout=10)
    services.close()  # ends what the adapters started, such as the v2 mapping process


def run_adapter_role(settings: Settings, role: str) -> None:
    from refloop.services import build_services
    from refloop.wiring import all_roles

    services = build_services(settings)
    roles = all_roles(services)
    if role not in roles:
        raise SystemExit(f"unknown role {role!r}; choose from web, worker, "
                         f"{', '.join(sorted(roles)) or '(no adapter roles configured)'}")
    try:
        roles[role](_stop_on_signals())
    except OSError as exc:  # bind: address in use, permission denied...
        log.error("role cannot start", extra={"role": role, "error": str(exc)})
        print(f"refloop: the {role} role cannot start: {exc}. Free the address or configure "
              "another one for it (under `refloop serve` the other roles keep running).",
              file=sys.stderr)
        raise SystemExit(ROLE_CANNOT_START) from exc


def adapter_role_names(settings: Settings) -> list[str]:
    from refloop.services import build_services
    from refloop.wiring import all_roles

    services = build_services(settings)
    try:
        return sorted(all_roles(services))
    finally:
        services.close()


def supervise(argv_base: list[str], roles: list[str]) -> int:
    """Run each role as `refloop serve --role R` and stop all when one ends or on a signal."""
    children = {role: subprocess.Popen([sys.executable, "-m", "refloop", *argv_base, "serve",
                                        "--role", role]) for role in roles}
    stop = _stop_on_signals()
    code = 0
    while not stop.is_set() and children:
        for role, child in list(children.items()):
            if child.poll() is None:
                continue
            if child.returncode == ROLE_CANNOT_START:  # that role only; the rest serve on
                log.error("role could not start", extra={"role": role})
                del children[role]
                code = ROLE_CANNOT_START
                continue
            log.error("role stopped", extra={"role": role, "exit": child.returncode})
            code = child.returncode or 1
            stop.set()
        stop.wait(0.5)
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 15
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return code


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    return stop
