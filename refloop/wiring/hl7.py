"""Wiring of the hl7 adapter: the MLLP listener role, the mapping and outbound work handlers,
the referral listener for outbound v2, and the `refloop hl7 ...` commands.
See refloop/wiring/__init__.py and docs/hl7v2.md."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from refloop.context import Context, pass_context

if TYPE_CHECKING:
    from referrals.worker import Handler
    from refloop.services import Services
    from refloop.wiring import Role


class Hl7Adapter:
    """The bridge's objects for one process."""

    def __init__(self, services: Services) -> None:
        from hl7_bridge.apply import Applier
        from hl7_bridge.config import load_config
        from hl7_bridge.intake import Intake
        from hl7_bridge.outbound import Outbound
        from hl7_bridge.srm import SrmSender

        self.config = load_config(services.settings.section("hl7"))
        self.intake = Intake(self.config, services.inbox, services.db.write, services.work)
        self.applier = Applier(services, self.config)
        self.outbound = Outbound(services, self.config)
        self.srm = SrmSender(services, self.config)

    def queue_status_reply(self, conn: Any, referral: Any, sender: str,
                           control_id: str) -> bool:
        return self.outbound.queue_status_reply(conn, referral, sender, control_id)


def build(services: Services) -> None:
    adapter = Hl7Adapter(services)
    services.adapters["hl7"] = adapter
    services.referrals.listeners.append(adapter.outbound.on_transition)


def work_handlers(services: Services) -> dict[str, Handler]:
    adapter: Hl7Adapter = services.adapters["hl7"]
    return {"hl7.message": adapter.applier.handle, "hl7.outbound": adapter.outbound.handle,
            "hl7.srm": adapter.srm.handle}


def roles(services: Services) -> dict[str, Role]:
    adapter: Hl7Adapter = services.adapters["hl7"]
    if not adapter.config.enabled:
        return {}

    def mllp(stop: threading.Event) -> None:
        from hl7_bridge.listener import run_listener

        run_listener(adapter.config, adapter.intake, stop)

    return {"mllp": mllp}


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
    """Messages waiting for the referral they refer to."""
    from hl7_bridge.index import parked_messages

    with obj.services.db.read() as conn:
        rows = parked_messages(conn)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        click.echo(f"inbox {row['inbox_id']}  since {row['parked_at']}  {row['waiting_for']}")
    if not rows:
        click.echo("no parked messages")


def commands() -> list[click.Command]:
    return [hl7_group]
