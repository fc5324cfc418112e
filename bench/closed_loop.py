"""Loop benchmark: what the loop's referral listener costs each lifecycle change.

Every change a referral goes through runs the loop's listener inside the saving transaction
(milestones for the referrer, the chase ladder, note deliveries, program clocks: rows and work
items written with the change). This measures referrals taken through the whole path (detect,
accept, schedule, complete-visit, close-loop with a consult note: five changes, each a milestone
for a configured FHIR referrer, the visit starting a chase ladder, the note stopping it and
going to the referrer) with the loop wired, against the same path with the loop's listener
removed (everything else wired), in alternating rounds on the same database. Prints `metric:
value unit` lines, medians, and the ratio.

    python bench/closed_loop.py [--referrals 200] [--rounds 5]

PostgreSQL runs when REFLOOP_BENCH_POSTGRES_URL or REFLOOP_TEST_POSTGRES_URL is set (a scratch
database is created and dropped); otherwise the run says it skipped it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scratch import scratch_postgres

from referrals.model import Command, Link, Referral, new_referral_id
from referrals.store import connect
from referrals.store.migrate import upgrade
from refloop.services import Services, build_services
from refloop.settings import Settings

EHR = "http://ehr.bench.invalid/fhir"
LOOP = {"specialists": [{"name": "heart", "specialties": ["cardiology"],
                         "fhir_base": "http://heart.bench.invalid/fhir",
                         "ladder": [{"step": "fhir-task", "after_days": 1},
                                    {"step": "coordinator", "after_days": 10}]}],
        "referrers": [{"name": "ehr", "servers": [EHR], "channel": "fhir",
                       "task_updates": True}],
        "programs": [{"program": "asm", "specialties": ["cardiology"]}]}


def report(metric: str, value: float, unit: str) -> None:
    print(f"{metric}: {value:.2f} {unit}", flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextmanager
def databases(pg_url: str | None) -> Iterator[list[tuple[str, str]]]:
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="refloop-bench-loop-"))
        made = [("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}")]
        if pg_url:
            made.append(("postgresql",
                         stack.enter_context(scratch_postgres(pg_url, "refloop_bench_loop"))))
        for _name, url in made:
            db = connect(url)
            upgrade(db)
            db.dispose()
        yield made


def path(services: Services, n: int) -> None:
    """One referral through the five changes."""
    referral, _ = services.referrals.open(Referral(
        id=new_referral_id(), source_key=f"fhir|{EHR}|ServiceRequest/b{n}-{new_referral_id()}",
        service_request=f"ServiceRequest/b{n}", patient=f"Patient/p{n}",
        requester="Practitioner/dr", specialty="cardiology"), Command("detect"))
    act = services.referrals.act
    act(referral.id, Command("accept"))
    services.resources.put({"resourceType": "Appointment", "id": f"a{referral.id}",
                            "status": "booked", "start": "2030-03-02T09:30:00+00:00"})
    act(referral.id, Command("schedule", changes={"add_outputs": [
        Link("Appointment", f"Appointment/a{referral.id}", "booked")]}))
    act(referral.id, Command("complete-visit"))
    services.resources.put({"resourceType": "DocumentReference", "id": f"d{referral.id}",
                            "status": "current", "content": [{"attachment": {
                                "contentType": "text/plain", "data": "U2Vlbi4="}}]})
    act(referral.id, Command("close-loop", changes={"add_outputs": [
        Link("DocumentReference", f"DocumentReference/d{referral.id}", "note")]}))


def rate(services: Services, count: int, offset: int) -> float:
    started = time.perf_counter()
    for n in range(count):
        path(services, offset + n)
    return count * 5 / (time.perf_counter() - started)


def run(name: str, url: str, count: int, rounds: int, var: Path) -> None:
    settings = Settings(var_dir=var, database_url=url, sections={"loop": LOOP})
    wired, bare = build_services(settings), build_services(settings)
    loop = bare.adapters["loop"].follower.on_transition
    bare.referrals.listeners.remove(loop)
    with_loop, without = [], []
    try:
        for r in range(rounds):
            with_loop.append(rate(wired, count, 2 * r * count))
            without.append(rate(bare, count, (2 * r + 1) * count))
            note(f"{name} round {r + 1}: {with_loop[-1]:.0f} vs {without[-1]:.0f} changes/s")
    finally:
        wired.close()
        bare.close()
    a, b = statistics.median(with_loop), statistics.median(without)
    report(f"{name}_changes_with_loop", a, "per_s")
    report(f"{name}_changes_without_loop_listener", b, "per_s")
    report(f"{name}_ratio_with_loop_vs_without", a / b, "x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--referrals", type=int, default=200, help="referrals per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pg = os.environ.get("REFLOOP_BENCH_POSTGRES_URL") or \
        os.environ.get("REFLOOP_TEST_POSTGRES_URL")
    if not pg:
        note("postgresql: skipped (set REFLOOP_BENCH_POSTGRES_URL)")
    with databases(pg) as made, tempfile.TemporaryDirectory() as var:
        for name, url in made:
            run(name, url, args.referrals, args.rounds, Path(var))


if __name__ == "__main__":
    main()
