"""A worker process for the multi-process work-queue tests (run as a script, not collected).

    python work_child.py URL MODE LEASE_SECONDS SIGNAL_DIR

MODE "drain": wait for SIGNAL_DIR/go, then claim and run `test.record` items until none is due;
each run inserts one row (item id, this worker) into the `completions` table.
MODE "hang": claim one `test.hang` item, write SIGNAL_DIR/started with the worker name, and sleep
(the test kills it while it holds the lease).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from referrals.store import connect  # noqa: E402
from referrals.store.quarantine import Quarantine  # noqa: E402
from referrals.store.work import WorkItem, WorkQueue  # noqa: E402
from referrals.worker import Worker, worker_name  # noqa: E402


def main() -> None:
    url, mode, lease, signal_dir = sys.argv[1], sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
    db = connect(url)
    queue = WorkQueue(db, Quarantine(db), lease_seconds=lease)
    name = worker_name()

    def record(item: WorkItem) -> None:
        with db.write() as c:
            c.execute(sa.text("INSERT INTO completions (item_id, worker) VALUES (:i, :w)"),
                      {"i": item.id, "w": name})
        time.sleep(0.002)

    def hang(item: WorkItem) -> None:
        (signal_dir / "started").write_text(name)
        time.sleep(120)

    if mode == "drain":
        (signal_dir / f"ready-{name.replace(':', '_')}").write_text("")
        deadline = time.monotonic() + 60
        while not (signal_dir / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        Worker(queue, {"test.record": record}, name=name, batch=5).drain()
    else:
        Worker(queue, {"test.hang": hang}, name=name, batch=1).run_once()
    db.dispose()


if __name__ == "__main__":
    main()
