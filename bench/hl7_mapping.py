"""The mapping half of bench/mllp.py: how fast stored v2 messages become referrals.

A burst of `--mapping-messages` REF^I12 (each a new referral for a new patient, with its IN1
coverage) is stored as the listener stores it (`Intake.store`, groups of 64 in one transaction,
SQLite with synchronous=FULL), then one worker, set up as `refloop serve --role worker` sets
it up (`tune_gc`, `worker_batch`, its mapping process: hl7_bridge/mapper.py), maps them all;
the rate is messages over the wall time of the drain, and the CPU rate counts the worker's and
its mapping process's CPU. `--worker-only` maps one more burst on a new store with the mapping
done in the worker alone, for the ratio. A burst of ADT^A04 (a new patient each) is timed the
same way, separately. The baseline is python-hl7's parse-only rate (`hl7.parse`) of the same
REF messages, in the same run.

The first REF burst runs on a new store. With `--store-size N` the REF burst runs again on a
second store grown to N referrals, so the two rates show what the store's size costs. That
store is grown with rows cloned from a real mapped REF^I12 (referral, events, Patient,
ServiceRequest and Coverage with their versions, keys, patient identifiers, v2 states, inbox
row and work item, each with fresh ids), written with the driver's executemany: mapping a
million messages first would take as long as the benchmark is meant to measure. `--store FILE`
keeps the grown SQLite file (and reuses it next
time, growing it only by what is missing; each run adds its burst to it).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "hl7v2"
REF = (FIXTURES / "authored__bench_REF_I12_v251_21seg.hl7").read_bytes().replace(b"\n", b"\r")
ADT = (FIXTURES / "authored__bench_ADT_A04_v251_20seg.hl7").read_bytes().replace(b"\n", b"\r")
#: what makes one bench REF^I12 a different referral of a different patient
REF_TOKENS = {"control": b"|BENCH0002|", "referral": b"R-88812", "mrn": b"A100234^",
              "ssn": b"123-45-6789", "member": b"XYZ123456789"}


def reference(n: int, prefix: str = "M") -> bytes:
    """REF^I12 number `n`: its own MSH-10, RF1-6, MRN, SSN and member id."""
    tag = f"{prefix}{n:09d}"
    return (REF.replace(REF_TOKENS["control"], f"|{tag}|".encode())
            .replace(REF_TOKENS["referral"], tag.encode())
            .replace(REF_TOKENS["mrn"], f"P{tag}^".encode())
            .replace(REF_TOKENS["ssn"], f"S{tag}".encode())
            .replace(REF_TOKENS["member"], f"MB{tag}".encode()))


def admission(n: int, prefix: str = "A") -> bytes:
    """ADT^A04 number `n`: a new patient (its own MSH-10, MRN and SSN)."""
    tag = f"{prefix}{n:09d}"
    return (ADT.replace(b"|BENCH0001|", f"|{tag}|".encode())
            .replace(REF_TOKENS["mrn"], f"P{tag}^".encode())
            .replace(REF_TOKENS["ssn"], f"S{tag}".encode()))


# --- storing and mapping ----------------------------------------------------------------------

def services_for(url: str, var: Path) -> Any:
    from refloop.services import build_services
    from refloop.settings import Settings

    return build_services(Settings(var_dir=var, database_url=url, sqlite_synchronous="FULL"))


def store_burst(services: Any, messages: list[bytes], group: int = 64) -> None:
    """Store as the listener does: each group of messages in one transaction."""
    intake = services.adapters["hl7"].intake
    for start in range(0, len(messages), group):
        answers = intake.store([intake.assess_frame(m) for m in messages[start:start + group]])
        if any(a is not None and b"MSA|AA|" not in a and b"MSA|CA|" not in a
               for a in answers):
            raise SystemExit("the bench messages were not accepted")


def map_all(services: Any) -> tuple[float, float, int]:
    """Drain the hl7.message work as the worker role does; (wall s, cpu s, messages). The CPU
    time is the worker's and its mapping process's (hl7_bridge/mapper.py) together."""
    from referrals.store.schema import inbox
    from referrals.worker import Worker
    from refloop.roles import tune_gc
    from refloop.wiring import all_handlers

    with services.db.read() as conn:
        waiting = int(conn.execute(sa.select(sa.func.count()).select_from(inbox).where(
            inbox.c.status == "received")).scalar_one())
    tune_gc()
    worker = Worker(services.work, all_handlers(services),
                    batch=services.settings.worker_batch)
    wall, cpu = time.perf_counter(), time.process_time() + mapping_cpu(services)
    worker.drain()
    wall, cpu = (time.perf_counter() - wall,
                 time.process_time() + mapping_cpu(services) - cpu)
    with services.db.read() as conn:
        left = int(conn.execute(sa.select(sa.func.count()).select_from(inbox).where(
            inbox.c.status == "received")).scalar_one())
    if left:
        raise SystemExit(f"{left} messages were not mapped")
    return wall, cpu, waiting


def mapping_cpu(services: Any) -> float:
    """CPU seconds the worker's mapping process has used so far (0 when it runs none)."""
    mapper = services.adapters["hl7"].applier.mapper
    pool = mapper.pool if mapper is not None else None
    total = 0.0
    for process in getattr(pool, "_processes", {}).values():
        try:
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def referral_count(url: str) -> int:
    path = url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM referrals").fetchone()[0])
    finally:
        conn.close()


def python_hl7_rate(messages: list[bytes]) -> float:
    """python-hl7's parse-only rate of `messages` (decoded as the bridge decodes them)."""
    import hl7

    texts = [m.decode("utf-8") for m in messages]
    began = time.perf_counter()
    for text in texts:
        hl7.parse(text)
    return len(texts) / (time.perf_counter() - began)


# --- growing the store ------------------------------------------------------------------------

#: tables a mapped REF^I12 adds rows to, and the columns the database assigns
GROWING = {"referrals": (), "referral_events": ("id",), "resources": (),
           "resource_versions": (), "hl7_referral_keys": (), "hl7_patient_ids": (),
           "hl7_entity_state": (), "inbox": (), "work_items": ("id",)}
Rows = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


def grow_store(url: str, var: Path, target: int, progress: Callable[[str], None]) -> int:
    """Add cloned referrals until the store holds `target`; returns the count now."""
    count = referral_count(url)
    if count >= target:
        return count
    tag = f"T{uuid.uuid4().hex[:8].upper()}"
    services = services_for(url, var)
    try:
        store_burst(services, [reference(0, tag)])
        map_all(services)
    finally:
        services.close()
    tokens, rows = _template(url, f"{tag}{0:09d}")
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    # the bench's own fixture, rebuilt if lost: no fsync, and a page cache (4 GB) that holds
    # the indexes, whose keys are random, so that growing does not wait on the disk per row
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-4000000")
    next_inbox = int(conn.execute("SELECT max(id) FROM inbox").fetchone()[0]) + 1
    count, began = referral_count(url), time.monotonic()
    while count < target:
        size = min(20000, target - count)
        conn.execute("BEGIN")
        for table, (columns, values) in _clones(tokens, rows, size, next_inbox).items():
            conn.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES "
                             f"({','.join('?' * len(columns))})", values)
        conn.execute("COMMIT")
        next_inbox, count = next_inbox + size, count + size
        progress(f"store: {count} referrals ({time.monotonic() - began:.0f} s)")
    conn.close()
    return referral_count(url)


def _template(url: str, tag: str) -> tuple[list[str], Rows]:
    """The tokens that make the template REF^I12's rows its own (referral, ServiceRequest,
    Patient and Coverage ids, its tag) and those rows, per table (shared rows such as the
    practitioners' and the payer's are not cloned)."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        referral_id, service_request, patient = conn.execute(
            "SELECT id, service_request, patient FROM referrals WHERE source_key LIKE ?",
            (f"%{tag}%",)).fetchone()
        coverage = conn.execute(
            "SELECT resource_id FROM resources WHERE resource_type = 'Coverage' AND "
            "body LIKE ?", (f"%{tag}%",)).fetchone()[0]
        tokens = [referral_id, service_request.split("/")[1], patient.split("/")[1],
                  coverage, tag]
        rows: Rows = {}
        for table, assigned in GROWING.items():
            cursor = conn.execute(f"SELECT * FROM {table}")
            columns = [d[0] for d in cursor.description]
            keep = [i for i, c in enumerate(columns) if c not in assigned]
            mine = [tuple(row[i] for i in keep) for row in cursor
                    if any(t in _text(v) for v in row for t in tokens)]
            rows[table] = ([columns[i] for i in keep], mine)
        return tokens, rows
    finally:
        conn.close()


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _clones(tokens: list[str], rows: Rows, size: int, first_inbox: int) -> Rows:
    from referrals.ids import time_ordered_id

    out: Rows = {t: (columns, []) for t, (columns, _) in rows.items()}
    for n in range(size):
        # the bridge's ids: time-ordered referral, ServiceRequest and Patient ids
        # (referrals/ids.py), a Coverage id derived from its key
        fresh = [time_ordered_id(), time_ordered_id(), time_ordered_id(), str(uuid.uuid4()),
                 f"C{uuid.uuid4().hex[:17].upper()}"]
        inbox_id = first_inbox + n
        for table, (columns, template) in rows.items():
            for row in template:
                out[table][1].append(tuple(_swap(v, c, table, tokens, fresh, inbox_id)
                                           for v, c in zip(row, columns, strict=True)))
    return out


def _swap(value: Any, column: str, table: str, tokens: list[str], fresh: list[str],
          inbox_id: int) -> Any:
    if table == "inbox" and column == "id":
        return inbox_id
    if table == "work_items" and column == "payload":
        return f'{{"inbox_id":{inbox_id}}}'
    if table == "work_items" and column == "idempotency_key":
        return f"inbox:{inbox_id}"
    if isinstance(value, bytes):
        text = value.decode("latin-1")
        for old, new in zip(tokens, fresh, strict=True):
            text = text.replace(old, new)
        return text.encode("latin-1")
    if isinstance(value, str):
        for old, new in zip(tokens, fresh, strict=True):
            value = value.replace(old, new)
    return value


# --- the section ------------------------------------------------------------------------------

def say(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


def burst(url: str, var: Path, messages: list[bytes], *, mapping_process: bool = True
          ) -> tuple[float, float, int]:
    services = services_for(url, var)
    if not mapping_process:
        services.adapters["hl7"].applier.mapper = None
    try:
        store_burst(services, messages)
        return map_all(services)
    finally:
        services.close()


def new_store(path: Path) -> str:
    from referrals.store import connect
    from referrals.store.migrate import upgrade

    url = f"sqlite:///{path}"
    db = connect(url)
    upgrade(db)
    db.dispose()
    return url


def mapping_section(args: argparse.Namespace) -> None:
    count = args.mapping_messages
    with tempfile.TemporaryDirectory() as tmp:
        url = new_store(Path(tmp) / "mapping.db")
        run = uuid.uuid4().hex[:4].upper()
        refs = [reference(n, f"R{run}") for n in range(count)]
        say(f"REF^I12 burst of {count} on a new store")
        wall, cpu, done = burst(url, Path(tmp), refs)
        rates = [(0, done / wall, done / cpu)]
        say(f"ADT^A04 burst of {count}")
        adt_wall, adt_cpu, adt_done = burst(url, Path(tmp), [admission(n, f"A{run}")
                                                             for n in range(count)])
        if args.worker_only:
            say(f"REF^I12 burst of {count} on a new store, mapped in the worker alone")
            alone = new_store(Path(tmp) / "alone.db")
            wall3, cpu3, done3 = burst(alone, Path(tmp), [reference(n, f"W{run}")
                                                          for n in range(count)],
                                       mapping_process=False)
        if args.store_size:
            grown = new_store(Path(args.store) if args.store else Path(tmp) / "grown.db")
            size = grow_store(grown, Path(tmp), args.store_size, say)
            say(f"REF^I12 burst of {count} on a store of {size} referrals")
            more = [reference(n, f"S{run}") for n in range(count)]
            wall2, cpu2, done2 = burst(grown, Path(tmp), more)
            rates.append((size, done2 / wall2, done2 / cpu2))
        baseline = statistics.median(python_hl7_rate(refs) for _ in range(3))
    for size, rate, cpu_rate in rates:
        print(f"mapped_ref_i12_store_{size}_referrals: {rate:.0f} msg/s ({count} messages; "
              f"{cpu_rate:.0f} msg/s of CPU, with the mapping process's)")
        print(f"ratio_ref_i12_store_{size}_vs_python_hl7_parse: {rate / baseline:.2f} x")
    print(f"mapped_adt_a04: {adt_done / adt_wall:.0f} msg/s ({count} messages; "
          f"{adt_done / adt_cpu:.0f} msg/s of worker CPU)")
    print(f"baseline_python_hl7_parse_only_ref_i12: {baseline:.0f} msg/s (the same "
          f"{count} REF^I12)")
    if args.worker_only:
        print(f"mapped_ref_i12_store_0_worker_alone: {done3 / wall3:.0f} msg/s ({count} "
              f"messages; {done3 / cpu3:.0f} msg/s of worker CPU)")
        print(f"ratio_ref_i12_mapping_process_vs_worker_alone: "
              f"{rates[0][1] / (done3 / wall3):.2f} x")
    if len(rates) > 1:
        print(f"ratio_ref_i12_at_{rates[1][0]}_vs_{rates[0][0]}_referrals: "
              f"{rates[1][1] / rates[0][1]:.2f} x")


def main() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    mapping_section(parser.parse_args())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mapping-messages", type=int, default=20000,
                        help="messages per mapping burst (REF^I12, then ADT^A04)")
    parser.add_argument("--store-size", type=int, default=0,
                        help="grow the store to this many referrals and map a REF^I12 burst "
                             "again")
    parser.add_argument("--worker-only", action="store_true",
                        help="also map a REF^I12 burst on a new store without the mapping "
                             "process, for the ratio")
    parser.add_argument("--store", default=os.environ.get("REFLOOP_BENCH_MAPPING_STORE", ""),
                        help="SQLite file to keep (and reuse) the grown store in")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
