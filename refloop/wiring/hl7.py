"""Wiring of the hl7 adapter: the MLLP listener role, the mapping and outbound work handlers,
the referral listener for outbound v2, and the `refloop hl7 ...` commands.
See refloop/wiring/__init__.py and docs/hl7v2.md."""

from __future__ import annotations

import json
import socket
import sys
import threading
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from refloop.context import Context, pass_context
from refloop.output import print_table

if TYPE_CHECKING:
    from referrals.worker import Handler
    from refloop.core_services import Services
    from refloop.settings import Settings
    from refloop.wiring import Role, Timer


class Hl7Adapter:
    """The bridge's objects for one process."""

    def __init__(self, services: Services) -> None:
        from hl7_bridge.apply import Applier
        from hl7_bridge.config import load_config
        from hl7_bridge.intake import Intake
        from hl7_bridge.outbound import Outbound
        from hl7_bridge.parking import Parking
        from hl7_bridge.partner_messages import PartnerMessages
        from hl7_bridge.srm import SrmSender

        self.config = load_config(services.settings.section("hl7"))
        self.intake = Intake(self.config, services.inbox, services.db.write, services.work)
        self.outbound = Outbound(services, self.config)
        self.applier = Applier(services, self.config, self.outbound)
        self.srm = SrmSender(services, self.config)
        self.partner = PartnerMessages(services, self.config)
        self.parking = Parking(services, timedelta(hours=self.config.parked_expiry_hours),
                               self.applier.tell_sender)

    def close(self) -> None:
        """Stop the mapping process, if the worker started one (hl7_bridge/mapper.py)."""
        if self.applier.mapper is not None:
            self.applier.mapper.close()

    def queue_status_reply(self, conn: Any, referral: Any, sender: str,
                           control_id: str) -> bool:
        return self.outbound.queue_status_reply(conn, referral, sender, control_id)

    def stage_events(self, partner: str) -> frozenset[str]:
        """The stages the bridge itself reports to `partner` about the partner's own v2
        referrals (its `outbound.events`; none when it has no outbound address)."""
        outbound = self.config.sender(partner).outbound
        return frozenset(outbound.events) if outbound.enabled else frozenset()


def build(services: Services) -> None:
    adapter = Hl7Adapter(services)
    services.adapters["hl7"] = adapter
    services.referrals.listeners.append(adapter.outbound.on_transition)


def work_handlers(services: Services) -> dict[str, Handler]:
    adapter: Hl7Adapter = services.adapters["hl7"]
    return {"hl7.message": adapter.applier, "hl7.outbound": adapter.outbound.handle,
            "hl7.srm": adapter.srm.handle,
            "hl7.partner-message": adapter.partner.handle,
            "hl7.expire-parked": lambda item: _expire_parked(adapter)}


def _expire_parked(adapter: Hl7Adapter) -> None:
    adapter.parking.expire()


def timers(services: Services) -> list[Timer]:
    from hl7_bridge.parking import EVERY_SECONDS, WORK_KIND
    from refloop.wiring import Timer

    return [Timer("hl7-parked-expiry", EVERY_SECONDS, WORK_KIND)]


def roles(services: Services) -> dict[str, Role]:
    adapter: Hl7Adapter = services.adapters["hl7"]
    if not adapter.config.enabled:
        return {}

    def mllp(stop: threading.Event) -> None:
        from hl7_bridge.listener import run_listener
        from hl7_bridge.processes import run_listener_processes

        if adapter.config.process_count <= 1:
            run_listener(adapter.config, adapter.intake, stop)
            return
        adapter.intake.close()
        run_listener_processes(adapter.config, partial(spawn_listener, services.settings), stop)

    return {"mllp": mllp}


def spawn_listener(settings: Settings, channel: socket.socket, index: int) -> Any:
    """Start MLLP listener process `index` (a fresh interpreter: no state shared by fork)."""
    import multiprocessing

    process = multiprocessing.get_context("spawn").Process(
        target=_listener_process, args=(settings, channel), name=f"refloop-mllp-{index}",
        daemon=True)
    process.start()
    return process


def _listener_process(settings: Settings, channel: socket.socket) -> None:
    from hl7_bridge.processes import die_with_parent, serve_handed
    from refloop.core_services import build_core
    from refloop.logs import configure_logging, log_file_for
    from refloop.wiring import build_all

    die_with_parent()
    configure_logging(settings.log_level, settings.log_format,
                      log_file_for(settings, server=True))
    services = build_core(settings)
    build_all(services)
    try:
        adapter: Hl7Adapter = services.adapters["hl7"]
        serve_handed(adapter.config, adapter.intake, channel)
    finally:
        services.close()


@click.group("hl7")
def hl7_group() -> None:
    """HL7 v2 over MLLP: send test messages, see parked messages."""


@hl7_group.command("send")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False,
                                                                   path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2575, show_default=True, type=int)
@click.option("--timeout", default=10.0, show_default=True, type=float)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
def hl7_send(files: tuple[Path, ...], host: str, port: int, timeout: float,
             as_json: bool) -> None:
    """Send FILES over MLLP (one message per file; batches as one frame) and print the ACKs.

    Exit code 1 when a message was not accepted (AE/AR/CE/CR, or no ACK)."""
    from hl7_bridge.client import MllpClient
    from hl7_bridge.send import summarise_ack
    from referrals.errors import PeerError

    results = []
    try:
        with MllpClient(host, port, timeout) as client, click.progressbar(
                files, label="sending", file=sys.stderr, hidden=len(files) < 5) as bar:
            for path in bar:
                answer = client.send(path.read_bytes())
                results.append({"file": str(path), **summarise_ack(answer)})
    except PeerError as exc:
        sent = f" after {len(results)} of {len(files)} files" if results else ""
        _print_results(results, as_json)
        raise click.ClickException(
            f"{exc}{sent}. Check that the MLLP listener is running there "
            "('refloop serve --role mllp') and that --host/--port match [hl7] host/port."
        ) from exc
    _print_results(results, as_json)
    failed = [r for r in results if r["code"] not in ("AA", "CA")]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(results)} messages were not "
                                   "accepted; the ACK texts above say why")


def _print_results(results: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for result in results:
        line = f"{result['file']}: {result['code'] or '?'} {result['control_id']}"
        click.echo(line + (f"  {result['text']}" if result["text"] else ""))


@hl7_group.command("parked")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def hl7_parked(obj: Context, as_json: bool) -> None:
    """Messages waiting for the referral they refer to, and when they expire into quarantine
    ([hl7] parked_expiry_hours)."""
    adapter: Hl7Adapter = obj.services.adapters["hl7"]
    rows = adapter.parking.listing()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no parked messages")
        return
    print_table(["inbox", "sender", "MSH-10", "waiting for", "parked (UTC)", "expires (UTC)"],
                [[r["inbox_id"], r["sender"], r["control_id"],
                  r["waiting_for"].removeprefix("referral:"), r["parked_at"][:16],
                  r["expires_at"][:16]] for r in rows])


def commands() -> list[click.Command]:
    return [hl7_group]
