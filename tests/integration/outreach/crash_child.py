"""Child process of test_crash.py: runs the work queue with the configuration it is given and
kills itself with SIGKILL right before or right after the SMS provider call returns."""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime
from typing import Any

from referrals.worker import Worker
from refloop.services import build_services
from refloop.settings import load_settings
from refloop.wiring import all_handlers


def main(config: str, moment: str, when: str) -> None:
    services = build_services(load_settings(config))
    now = datetime.fromisoformat(moment)
    services.work.clock = lambda: now
    runtime = services.adapters["outreach"]
    runtime.clock = lambda: now
    sms = runtime.channels["sms"]
    real = sms.send

    def send(message: Any) -> Any:
        if when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(message)
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    sms.send = send
    Worker(services.work, all_handlers(services)).drain()


if __name__ == "__main__":
    main(*sys.argv[1:4])
