"""The mapping process (hl7_bridge/mapper.py): a message that fails there gets the answer it
gets in the worker, and a process that dies leaves its batch to the worker. The update
semantics under the process are in test_updates.py. SQLite: the process never touches the
store. A stopping worker ends its process even when it hangs; a killed one leaves none."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from hl7_bridge import mapper
from hl7_bridge.mapper import MappingProcess
from referrals.store.schema import inbox, referrals
from refloop import roles

from .conftest import Feed

ON_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ROOT = Path(__file__).resolve().parents[3]


def ref(control: str, key: str) -> bytes:
    return (f"MSH|^~\\&|GPSYS|GPCLINIC|HUB|HUB|20240101120000||REF^I12^REF_I12|{control}|P|"
            f"2.5.1\rRF1|A|R||||{key}\rPID|1||X-{control}^^^GP^MR||Doe^Jane||19700101|F\r"
            ).encode()


@pytest.fixture
def process(feed: Feed) -> Iterator[MappingProcess]:
    applier = feed.adapter.applier
    applier.mapper = MappingProcess(applier.config, min_batch=2)
    applier.mapper.start()
    yield applier.mapper
    applier.mapper.stop()


def send_all(feed: Feed, *messages: bytes) -> None:
    for raw in messages:
        ack = feed.send(raw) or b""
        assert b"MSA|AA|" in ack, ack


def statuses(feed: Feed) -> list[str]:
    with feed.services.db.read() as conn:
        return list(conn.execute(sa.select(inbox.c.status).order_by(inbox.c.id)).scalars())


@ON_SQLITE
def test_a_message_that_fails_there_is_quarantined_as_in_the_worker(
        feed: Feed, process: MappingProcess) -> None:
    too_long = "R-2^" + "N" * 500  # fits its column, too long with its namespace: refused
    send_all(feed, ref("G1", "R-1"), ref("B1", too_long), ref("G2", "R-3"))
    feed.drain()
    assert statuses(feed) == ["processed", "quarantined", "processed"]
    (entry,) = feed.services.quarantine.list()
    assert "too long to be stored" in entry.reason
    assert process.mapped == 2  # the bad one was mapped again in the worker, to fail there


@ON_SQLITE
def test_a_process_that_dies_leaves_its_batch_to_the_worker_and_is_replaced(
        feed: Feed, process: MappingProcess, caplog: pytest.LogCaptureFixture) -> None:
    assert process.pool is not None
    (child,) = process.pool._processes.values()  # type: ignore[union-attr]
    child.kill()
    child.join(10)
    send_all(feed, ref("K1", "R-11"), ref("K2", "R-12"))
    with caplog.at_level(logging.WARNING, logger="refloop.hl7.mapper"):
        feed.drain()
    assert statuses(feed) == ["processed", "processed"]
    assert "mapping process failed" in caplog.text and process.mapped == 0

    assert process.pool is None
    process.start()  # as the next batch would; this waits until the new one runs
    send_all(feed, ref("K3", "R-13"), ref("K4", "R-14"))
    feed.drain()
    assert process.mapped == 2
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(referrals)).scalar() == 4


@ON_SQLITE
def test_a_hung_process_leaves_its_batch_to_the_worker_in_time(
        feed: Feed, process: MappingProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that takes a batch and never answers holds mapping up for the timeout only
    (it was two minutes); it is killed and the batch mapped here."""
    monkeypatch.setattr(mapper, "TIMEOUT_SECONDS", 0.5)
    assert mapper.timeout_for(500) == 0.5 and mapper.timeout_for(3000) == 20.5
    assert process.pool is not None
    (child,) = process.pool._processes.values()  # type: ignore[union-attr]
    os.kill(child.pid, signal.SIGSTOP)
    send_all(feed, ref("H1", "R-31"), ref("H2", "R-32"))
    feed.drain()
    assert statuses(feed) == ["processed", "processed"] and process.mapped == 0
    assert ended(child.pid) and process.pool is None


@ON_SQLITE
def test_a_process_hung_while_it_starts_is_replaced(
        feed: Feed, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process stopped before it answered that it runs was waited for for ever: every batch
    was mapped in the worker and the process never ended. It gets `START_SECONDS`."""
    starting = MappingProcess(feed.adapter.applier.config, min_batch=1)
    rows = [(ref("S1", "R-41"), "GPSYS^GPCLINIC")]
    try:
        assert starting.map_many(rows) is None  # starting: this batch is mapped in the worker
        (child,) = starting.pool._processes.values()  # type: ignore[union-attr]
        os.kill(child.pid, signal.SIGSTOP)  # as it imports (or, rarely, just after)
        monkeypatch.setattr(mapper, "START_SECONDS", 0.0)
        monkeypatch.setattr(mapper, "TIMEOUT_SECONDS", 0.0)
        assert starting.map_many(rows) is None
        assert ended(child.pid)
    finally:
        starting.close()


@ON_SQLITE
def test_closing_ends_a_hung_process_and_starts_no_other(
        feed: Feed, process: MappingProcess) -> None:
    assert process.pool is not None
    (child,) = process.pool._processes.values()  # type: ignore[union-attr]
    os.kill(child.pid, signal.SIGSTOP)  # hung: it would keep a batch, and a stopping worker
    process.close()
    assert ended(child.pid)
    rows = [(ref("C1", "R-21"), "GPSYS^GPCLINIC"), (ref("C2", "R-22"), "GPSYS^GPCLINIC")]
    assert process.map_many(rows) is None and process.pool is None  # mapped in the worker



@ON_SQLITE
def test_a_stopping_worker_closes_its_mapping_process(
        feed: Feed, process: MappingProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("refloop.services.build_services", lambda settings: feed.services)
    monkeypatch.setattr(roles, "tune_gc", lambda: None)  # keeps the test session's collector
    stop = threading.Event()
    stop.set()
    roles.run_worker(feed.services.settings, stop)
    assert process.closed and process.pool is None


WORKER = textwrap.dedent("""
    import time
    from hl7_bridge.config import Hl7Config
    from hl7_bridge.mapper import MappingProcess
    if __name__ == "__main__":
        process = MappingProcess(Hl7Config(), min_batch=1)
        process.start()
        (child,) = process.pool._processes.values()
        print(child.pid, flush=True)
        time.sleep(600)
""")


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def ended(pid: int, seconds: float = 30) -> bool:
    """Whether process `pid` ends within `seconds` (gone or a zombie: whoever reaps it, a
    stopped process that was not killed never ends)."""
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not running(pid)


def test_a_worker_killed_outright_leaves_no_mapping_process_behind(tmp_path: Path) -> None:
    """SIGKILL gives the worker no chance to stop its mapping process, and the process holds
    both ends of its queue, so it never reads an end: it watches its worker instead."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                          cwd=ROOT) as worker:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert line.strip().isdigit(), f"the worker did not start its mapping process: {line!r}"
        child = int(line)
        try:
            assert running(child)
            worker.kill()
            worker.wait()
            deadline = time.monotonic() + 30
            while running(child) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not running(child)
        finally:
            if running(child):  # the test failed: leave nothing behind
                os.kill(child, signal.SIGKILL)
