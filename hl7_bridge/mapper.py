"""Parsing and mapping stored messages: here, or in a mapping process beside the writer.

A worker applies a batch while the next one is parsed and mapped in a thread (apply.py). In
one process both hold the same interpreter lock, so a worker used one core however many the
machine had, and parsing and mapping were half its work. With `[hl7] mapping_process = true`
(the default), a worker starts one more process (`multiprocessing`, spawned) that parses and
maps each batch of at least `min_batch` messages and sends back, per message, its mapping and
its facts (facts.py) as JSON. The writer then parses a message only to merge it with a stored
v2 state.

What the process never changes:
- a message that fails there is parsed and mapped again here, so its error, its quarantine and
  its answer to the sender are the same as without the process;
- when the process dies or does not answer in time (`timeout_for`: 10 seconds, more for a
  batch of over 1,000 messages; a batch takes it a few milliseconds per hundred messages), the
  batch is mapped here and a new process is started for the next one; while it starts, batches
  are mapped here, and one that has not started within `START_SECONDS` is ended and started
  again;
- the new patients and ServiceRequests it maps get their ids there (ids.py): the writer keeps
  them, and later messages find those records by identifier and referral key, not by id.

The process never outlives the worker: it ends when its worker has ended, even one killed
outright, and `close` (the worker stopping) kills it even when it hangs, and starts no other.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import fields
from typing import Any

import orjson

from hl7_bridge.config import Hl7Config
from hl7_bridge.facts import Facts, facts_of
from hl7_bridge.maps import Mapped, MappingError, to_mapped
from hl7_bridge.message import Message, parse_messages

log = logging.getLogger("refloop.hl7.mapper")

#: the longest referral key column (referrals.source_key, hl7_referral_keys, hl7_parked)
KEY_MAX = 512
#: how long a batch may take in the mapping process before it is mapped here instead: a hung
#: process holds up mapping this long (`timeout_for`)
TIMEOUT_SECONDS = 10.0
#: and this much more per message of a batch over 1,000 (mapping takes about 0.2 ms each)
TIMEOUT_PER_MESSAGE = 0.01
#: how long a new process may take to start (imports: about a second) before it is taken for
#: hung, ended and started again; batches are mapped here meanwhile
START_SECONDS = 60.0
#: how often the mapping process checks that its worker still runs
PARENT_CHECK_SECONDS = 1.0
#: the fields of a mapping that travel back as JSON (the order's segments go by position)
_MAPPED_FIELDS = [f.name for f in fields(Mapped) if f.name != "order_group"]


def parse_body(config: Hl7Config, body: bytes, sender: str) -> Message:
    sender_config = config.sender(sender)
    return parse_messages(body, fallback_charset=sender_config.fallback_charset,
                          default_version=sender_config.default_version)[0]


def map_message(config: Hl7Config, message: Message, sender: str) -> tuple[Mapped, Facts]:
    mapped = to_mapped(message, sender, config.sender(sender))
    check_keys(mapped, sender)
    return mapped, facts_of(message, mapped)


def check_keys(mapped: Mapped, sender: str) -> None:
    """Keys longer than their columns (referral source key, business keys, parked keys) would be
    refused by PostgreSQL and silently kept whole by SQLite: refuse them on both."""
    for key in mapped.referral_keys:
        if len(f"hl7|{sender}|{key}") > KEY_MAX or len(f"referral:{key}") > KEY_MAX:
            raise MappingError(f"the referral identifier {key[:40]!r}... with its namespace is "
                               f"too long to be stored (at most {KEY_MAX} characters with the "
                               "sender's name)")


class MappingProcess:
    """The worker's mapping process, started on first use."""

    def __init__(self, config: Hl7Config, min_batch: int = 32) -> None:
        self.config = config
        self.min_batch = min_batch
        self.pool: ProcessPoolExecutor | None = None
        self.started: Future[bool] | None = None
        self.started_at = 0.0
        self.lock = threading.Lock()
        #: set by `close`: no process is started again
        self.closed = False
        #: messages the process has parsed and mapped (failures mapped again here not counted)
        self.mapped = 0

    def map_many(self, rows: list[tuple[bytes, str]]
                 ) -> list[tuple[Mapped, Facts] | None] | None:
        """Each (body, sender)'s mapping and facts, None for a message that failed there; or
        None for all when the process is not running (yet) or failed."""
        pool = self._running() if len(rows) >= self.min_batch else None
        if pool is None:
            return None
        try:
            blobs = pool.submit(_map_batch, rows).result(timeout=timeout_for(len(rows)))
        except Exception as exc:  # died, hung, or could not take the batch: mapped here
            log.warning("HL7 mapping process failed; mapping the batch in the worker",
                        extra={"error": type(exc).__name__, "batch": len(rows)})
            self.stop()
            return None
        results = [None if blob is None else _read(blob) for blob in blobs]
        self.mapped += sum(r is not None for r in results)
        return results

    def start(self, timeout: float = 60.0) -> None:
        """Start the process now and wait until it runs (tests, benchmarks)."""
        self._running()
        if self.started is not None:
            self.started.result(timeout=timeout)

    def _running(self) -> ProcessPoolExecutor | None:
        with self.lock:
            if self.closed:
                return None
            if self.pool is None:
                context = multiprocessing.get_context("spawn")
                pool = ProcessPoolExecutor(1, mp_context=context, initializer=_begin,
                                           initargs=(self.config, os.getpid()))
                try:
                    self.started = pool.submit(_alive)
                except Exception as exc:  # e.g. a script that starts processes on import
                    log.warning("HL7 mapping process could not start; mapping in the worker",
                                extra={"error": f"{type(exc).__name__}: {exc}"[:200]})
                    pool.shutdown(wait=False)
                    self.min_batch = 2**62  # not tried again by this worker
                    return None
                self.pool, self.started_at = pool, time.monotonic()
                return None  # starting (imports take a moment): this batch is mapped here
            assert self.started is not None
            if self.started.done():
                return self.pool
            if time.monotonic() - self.started_at <= START_SECONDS:
                return None
        log.warning("HL7 mapping process did not start in time; starting another",
                    extra={"seconds": START_SECONDS})
        self.stop()
        return None

    def close(self) -> None:
        """Stop the process for good (the worker is stopping)."""
        with self.lock:
            self.closed = True
        self.stop()

    def stop(self) -> None:
        """Stop the process (a new one starts on next use)."""
        with self.lock:
            pool, self.pool, self.started = self.pool, None, None
        if pool is not None:
            # a hung process would keep its batch for ever: ended, not waited for
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
            pool.shutdown(wait=False, cancel_futures=True)


def timeout_for(count: int) -> float:
    """How long a batch of `count` messages may take in the mapping process."""
    return TIMEOUT_SECONDS + TIMEOUT_PER_MESSAGE * max(0, count - 1000)


def _read(blob: bytes) -> tuple[Mapped, Facts]:
    data = orjson.loads(blob)
    return Mapped(**data["mapped"]), Facts(**data["facts"])


# --- in the mapping process ---------------------------------------------------------------

_config = Hl7Config()


def _begin(config: Hl7Config, worker: int) -> None:
    global _config
    _config = config
    threading.Thread(target=_end_with, args=(worker,), name="end-with-worker",
                     daemon=True).start()
    gc.collect()  # as a worker does (refloop/roles.py): mapping allocates many young objects
    gc.freeze()
    gc.set_threshold(500_000, 10, 10)


def _alive() -> bool:
    return True


def _end_with(worker: int) -> None:
    """End when the worker has: a worker killed outright (SIGKILL, OOM) leaves no one to stop
    this process, and its queue never closes (the process holds both ends)."""
    while os.getppid() == worker:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _map_batch(rows: list[tuple[bytes, str]]) -> list[bytes | None]:
    return [_map_one(body, sender) for body, sender in rows]


def _map_one(body: bytes, sender: str) -> bytes | None:
    try:
        mapped, facts = map_message(_config, parse_body(_config, body, sender), sender)
        data: dict[str, Any] = {"mapped": {name: getattr(mapped, name) for name in _MAPPED_FIELDS},
                                "facts": vars(facts)}
        return orjson.dumps(data)
    except Exception:  # mapped again in the worker, which keeps the error
        return None
