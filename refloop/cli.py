"""The `refloop` command line."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from referrals.errors import PeerError, RefloopError
from referrals.ids import short_id
from refloop.context import Context, pass_context
from refloop.files import ensure_private_dir
from refloop.output import output_width, print_json, print_table
from refloop.referral_ids import REFERRAL
from refloop.schema import ensure_schema
from refloop.settings import Settings, check_serving


class Group(click.Group):
    """Turns our errors into one clear line and exit code 1, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PeerError as exc:
            obj = ctx.find_object(Context)
            where = f" (each attempt is logged in {obj.log_file})" \
                if obj is not None and obj.log_file else ""
            raise click.ClickException(f"{exc}{where}") from exc
        except RefloopError as exc:
            raise click.ClickException(str(exc)) from exc
        except sa.exc.OperationalError as exc:
            raise click.ClickException(_database_problem(ctx, exc)) from exc


def _database_problem(ctx: click.Context, exc: sa.exc.OperationalError) -> str:
    from refloop.logs import redact_text

    where = "the database"
    obj = ctx.find_object(Context)
    try:
        if obj is not None:
            url = sa.engine.make_url(obj.settings.database)
            where = url.render_as_string(hide_password=True)
    except (RefloopError, sa.exc.ArgumentError):
        pass
    detail = redact_text(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc))
    return (f"cannot use {where}: {detail}. Check database_url in refloop.toml or "
            "REFLOOP_DATABASE_URL, and that the database server is running.")


@click.group(cls=Group)
@click.option("--config", type=click.Path(path_type=Path), envvar="REFLOOP_CONFIG",
              help="TOML configuration file (default ./refloop.toml when present).")
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """Refloop: FHIR-native referral integration server."""
    ctx.obj = Context(config)


@main.command()
@click.option("--role", type=str, default="all", show_default=True,
              help="all, web, worker, or an adapter role such as mllp.")
@pass_context
def serve(obj: Context, role: str) -> None:
    """Run the server: web (gunicorn), workers and scheduler, and adapter roles."""
    from refloop import roles
    from refloop.wiring import prepare_serving

    settings = obj.settings
    if role in ("all", "web"):
        check_serving(settings)
    obj.configure_logging(server=True)
    ensure_schema(settings)
    prepare_serving(settings)
    if role == "web":
        roles.run_web(settings)
    elif role == "worker":
        roles.run_worker(settings)
    elif role == "all":
        base = ["--config", str(obj.config)] if obj.config else []
        names = ["web", "worker", *roles.adapter_role_names(settings)]
        click.echo(f"Refloop serving on {settings.base_url} (roles: {', '.join(names)})",
                   err=True)
        sys.exit(roles.supervise(base, names))
    else:
        roles.run_adapter_role(settings, role)


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@pass_context
def db_upgrade(obj: Context) -> None:
    """Apply every pending migration."""
    heads = ensure_schema(obj.settings)
    click.echo(f"database at {', '.join(heads)}")


@db.command("status")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def db_status(obj: Context, as_json: bool) -> None:
    """Show the applied and pending migrations: the core's first revision (0001_core) and each
    branch off it (the core's later changes and one branch per adapter)."""
    from referrals.store import connect
    from referrals.store.migrate import ROOT_REVISION, branches, current, pending

    if not obj.settings.database_url:
        ensure_private_dir(obj.settings.var_dir)
    database = connect(obj.settings.database)
    try:
        found, applied = branches(database), current(database)
        info: dict[str, Any] = {"url": database.engine.url.render_as_string(hide_password=True),
                "current": applied, "pending": pending(database),
                "root": {"revision": ROOT_REVISION, "applied": bool(applied)},
                "branches": [{"name": b.name, "applied": b.applied, "newest": b.newest,
                              "pending": list(b.pending)} for b in found]}
    finally:
        database.dispose()
    if as_json:
        print_json(info)
        return
    waiting = sum(len(b.pending) for b in found) + (0 if applied else 1)
    state = "empty" if not applied else "current" if not waiting else \
        f"{waiting} revision{'s' if waiting != 1 else ''} pending"
    click.echo(f"database: {info['url']}\nschema: {state} ({ROOT_REVISION} "
               f"{'applied' if applied else 'not applied'}, {len(found)} branches off it)")
    print_table(["branch", "applied", "pending"],
                [[b.name, b.applied or "-", ", ".join(b.pending) or "-"] for b in found])
    if waiting:
        click.echo("run 'refloop db upgrade' to apply what is pending")


@db.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_context
def db_backup(obj: Context, file: Path) -> None:
    """Copy the SQLite store to FILE while the server runs (SQLite's online backup API)."""
    from referrals.store.backup import backup

    database = _sqlite_path(obj.settings, "backup")
    pages = _with_progress("Backing up", lambda step: backup(database, file, step))
    click.echo(f"backed up {database} to {file} ({pages} pages, mode 0600); restore it with "
               f"'refloop db restore {file}'")


@db.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask: replace the database's content.")
@pass_context
def db_restore(obj: Context, file: Path, yes: bool) -> None:
    """Replace the SQLite store's content with the backup FILE (checked first)."""
    from referrals.store.backup import check_backup, restore
    from referrals.store.migrate import pending

    database = _sqlite_path(obj.settings, "restore")
    check_backup(file)
    if database.exists() and not yes:
        click.confirm(f"Replace everything in {database} with {file}?", abort=True, err=True)
    if not database.exists():
        ensure_private_dir(database.parent)
    pages = _with_progress("Restoring", lambda step: restore(file, database, step))
    click.echo(f"restored {file} into {database} ({pages} pages)")
    from referrals.store import connect

    restored = connect(obj.settings.database)
    try:
        missing = pending(restored)
    finally:
        restored.dispose()
    if missing:
        click.echo(f"the backup's schema is older (pending: {', '.join(missing)}); run "
                   "'refloop db upgrade'")


def _sqlite_path(settings: Settings, what: str) -> Path:
    url = sa.engine.make_url(settings.database)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise click.ClickException(
            f"'refloop db {what}' is for the embedded SQLite store; on PostgreSQL use its own "
            "tools: pg_dump -Fc for a logical copy and pg_restore to load it, or "
            "pg_basebackup with WAL archiving for point-in-time recovery (docs/deploy.md)")
    return Path(url.database)


def _with_progress(label: str, run: Any) -> Any:
    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:
        def step(done: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        return run(step)


@main.group()
def referrals() -> None:
    """Referrals in the store."""


@referrals.command("list")
@click.option("--status", "stage", help="Only this stage (detected, accepted, scheduled...).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000),
              help="Referrals per page.")
@click.option("--cursor", default=None, help="Start after a previous page (its 'next').")
@click.option("--json", "as_json", is_flag=True,
              help='{"referrals": [...], "next": cursor or null}')
@pass_context
def referrals_list(obj: Context, stage: str | None, limit: int, cursor: str | None,
                   as_json: bool) -> None:
    """List referrals, newest change first, a page at a time."""
    from referrals.codec import referral_to_dict
    from referrals.model import Stage

    if stage and stage not in {s.value for s in Stage}:
        raise click.BadParameter(f"{stage!r}; choose from {', '.join(s.value for s in Stage)}",
                                 param_hint="--status")
    try:
        found, following = obj.services.store.page(stage=stage, limit=limit, after=cursor)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}; pass the 'next' of a previous page",
                                 param_hint="--cursor") from exc
    if as_json:
        print_json({"referrals": [referral_to_dict(r) for r in found], "next": following})
        return
    print_table(["id", "stage", "priority", "specialty", "owner", "due"],
                [[short_id(r.id), r.stage.value, r.priority, r.specialty, r.owner,
                  r.deadline.strftime("%Y-%m-%d %H:%M") if r.deadline else ""] for r in found])
    if following:
        click.echo(f"more: refloop referrals list --cursor {following}"
                   f"{f' --status {stage}' if stage else ''} --limit {limit}", err=True)


@referrals.command("show")
@click.argument("referral_id", type=REFERRAL)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def referrals_show(obj: Context, referral_id: str, as_json: bool) -> None:
    """One referral: its Task and its event log. REFERRAL_ID may be the short id the listings
    print (its last 8 characters) or any unique beginning of the id."""
    store = obj.services.store
    task = store.task(referral_id)
    if task is None:
        raise click.ClickException(f"no referral {referral_id}; 'refloop referrals list' "
                                   "shows their ids")
    events = store.events(referral_id)
    from referrals.coordinator import to_fhir

    tasks = obj.services.tasks.for_referral(referral_id)
    sections = _detail_sections(obj.services, referral_id)
    if as_json:
        print_json({"task": task, "events": [dataclasses.asdict(e) for e in events],
                    "coordinator_tasks": [to_fhir(t) for t in tasks],
                    **{name: data for name, (data, _rows) in sections.items()}})
        return
    click.echo(f"Task/{referral_id}  status={task['status']}  stage="
               f"{task['businessStatus']['text']}")
    print_table(["#", "at", "action", "from", "to", "who", "reason", "source"],
                [[e.seq, e.at.strftime("%Y-%m-%d %H:%M"), e.action,
                  e.from_stage.value if e.from_stage else "", e.to_stage.value,
                  e.actor.display or e.actor.reference, e.reason.code if e.reason else "",
                  e.source] for e in events])
    if tasks:
        click.echo("\nCoordinator tasks")
        print_table(["task", "kind", "status", "due", "outcome", "reason"],
                    [[t.id[:8], t.kind, t.status,
                      t.due_at.strftime("%Y-%m-%d %H:%M") if t.due_at else "",
                      t.outcome or "", t.reason] for t in tasks], width=output_width())
    for name, (_data, (headers, rows)) in sections.items():
        click.echo(f"\n{name.replace('_', ' ').capitalize()}")
        print_table(headers, rows, width=output_width())


def _detail_sections(services: Any, referral_id: str) -> dict[str, Any]:
    """Extra sections adapters add to `referrals show` (wiring `referral_details`): name ->
    (JSON data, (table headers, table rows))."""
    from refloop.wiring import all_referral_details

    return all_referral_details(services, referral_id)


@main.group()
def quarantine() -> None:
    """Input and work kept aside because it could not be processed."""


@quarantine.command("list")
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved entries.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def quarantine_list(obj: Context, include_resolved: bool, as_json: bool) -> None:
    """What is in quarantine, and why."""
    entries = obj.services.quarantine.list(include_resolved=include_resolved)
    if as_json:
        print_json([{"id": e.id, "origin": e.origin, "kind": e.kind, "reason": e.reason,
                     "content_type": e.content_type, "bytes": len(e.original),
                     "inbox_id": e.inbox_id, "work_item_id": e.work_item_id,
                     "created_at": e.created_at, "resolved_at": e.resolved_at}
                    for e in entries])
        return
    if not entries:
        click.echo("quarantine is empty")
        return
    print_table(["id", "origin", "kind", "when", "bytes", "reason"],
                [[e.id, e.origin, e.kind, e.created_at.strftime("%Y-%m-%d %H:%M"),
                  len(e.original), e.reason] for e in entries], width=output_width())


@main.group()
def work() -> None:
    """The work queue."""


@work.command("drain")
@pass_context
def work_drain(obj: Context) -> None:
    """Process every due work item now, then exit."""
    from referrals.worker import Worker
    from refloop.wiring import all_handlers

    done = Worker(obj.services.work, all_handlers(obj.services)).drain()
    click.echo(f"processed {done} work items; queue: {obj.services.work.counts()}")


def _add_adapter_commands() -> None:
    from refloop.demo import demo
    from refloop.wiring import all_commands

    main.add_command(demo)
    for command in all_commands():
        main.add_command(command)


_add_adapter_commands()
