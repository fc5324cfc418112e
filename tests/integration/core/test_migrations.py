"""The Alembic migrations, on SQLite and PostgreSQL: the schema they build is the one the live table
definitions describe, they go down to base and up again, and the core imports no adapter.

The migrations spell out their DDL (frozen history); these tests are what keeps them and the live
definitions (referrals/store/schema.py and each adapter's tables.py) from drifting apart: a change
to a table definition without a new migration fails here.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from access.tables import metadata as access_metadata
from analytics.tables import metadata as analytics_metadata
from hl7_bridge.tables import metadata as hl7_metadata
from loop.tables import metadata as loop_metadata
from outreach.tables import metadata as outreach_metadata
from pas_client.tables import metadata as pas_metadata
from referrals.store import Database, connect
from referrals.store.migrate import alembic_config, current, upgrade
from referrals.store.schema import metadata as core_metadata
from scheduling.tables import metadata as scheduling_metadata
from smart_app.tables import metadata as smart_metadata
from subscriptions.tables import metadata as subscriptions_metadata

ROOT = Path(__file__).resolve().parents[3]
LIVE_METADATA = [core_metadata, subscriptions_metadata, hl7_metadata, pas_metadata,
                 smart_metadata, outreach_metadata, scheduling_metadata, access_metadata,
                 loop_metadata, analytics_metadata]

#: Indexes on `referrals` that migration 0005_smart creates for the worklist's keyset pages but
#: that no MetaData declares. They are real schema the worklist queries rely on, so they are
#: expected here (not ignored): a migration that loses or changes one fails the comparison.
WORKLIST_INDEXES = {
    "ix_referrals_wl_due": ["deadline", "id"],
    "ix_referrals_wl_created": ["created_at", "id"],
    "ix_referrals_wl_stage_due": ["stage", "deadline", "id"],
    "ix_referrals_wl_owner_due": ["owner", "deadline", "id"],
    "ix_referrals_wl_priority_due": ["priority", "deadline", "id"],
    "ix_referrals_wl_specialty_due": ["specialty", "deadline", "id"],
    "ix_referrals_wl_patient_due": ["patient", "deadline", "id"],
}

#: top-level packages the core must never import (DESIGN.md dependency rules 2 and 3)
NOT_FOR_THE_CORE = {"subscriptions", "hl7_bridge", "pas_client", "smart_app", "capability",
                    "outreach", "scheduling", "refloop"}
#: all a migration may import: frozen history depends on nothing that can change under it
MIGRATION_IMPORTS = {"__future__", "alembic", "sqlalchemy"}


def expected_metadata() -> sa.MetaData:
    """The union of every live MetaData, plus the worklist indexes (see WORKLIST_INDEXES)."""
    union = sa.MetaData()
    for metadata in LIVE_METADATA:
        for table in metadata.tables.values():
            assert table.name not in union.tables, f"{table.name} is defined twice"
            table.to_metadata(union)
    referrals = union.tables["referrals"]
    declared = {index.name for index in referrals.indexes}
    for name, columns in WORKLIST_INDEXES.items():
        if name not in declared:
            sa.Index(name, *(referrals.c[column] for column in columns))
    return union


def compare_server_default(context: MigrationContext, inspected_column: Any,
                           metadata_column: Any, inspected_default: str | None,
                           metadata_default: Any, rendered_metadata_default: str | None
                           ) -> bool | None:
    """Alembic's own comparison, except one SQLite reflection artefact.

    Ignored: on SQLite an empty-string default reflects as `('')`, and Alembic's SQLite comparison
    unquotes only non-empty literals (`'(.+)'`), so `DEFAULT ''` never equals itself there. Only
    that exact pair is treated as equal; every other default goes to Alembic (None).
    """
    if (context.dialect.name == "sqlite" and rendered_metadata_default == ""
            and inspected_default in ("''", "('')")):
        return False
    return None


def schema_differences(database_url: str) -> list[Any]:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "compare_type": True, "compare_server_default": compare_server_default})
            return list(compare_metadata(context, expected_metadata()))
    finally:
        engine.dispose()


@pytest.fixture
def migrated(database_url: str) -> Iterator[Database]:
    db = connect(database_url)
    yield db
    db.dispose()


def test_migrations_build_the_schema_the_live_tables_describe(database_url: str) -> None:
    assert schema_differences(database_url) == []


def test_the_comparison_sees_a_drift(database_url: str) -> None:
    """The check above can fail: a column the migrations never created is reported."""
    expected = expected_metadata()
    expected.tables["cursors"].append_column(sa.Column("drifted", sa.Integer))
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, expected)
    finally:
        engine.dispose()
    assert [(d[0], d[2], d[3].name) for d in differences] == [("add_column", "cursors",
                                                               "drifted")]


def test_downgrade_to_base_then_upgrade_to_heads(migrated: Database, database_url: str) -> None:
    heads = sorted(ScriptDirectory.from_config(alembic_config(migrated)).get_heads())
    assert current(migrated) == heads

    downgrade_to_base(migrated)
    assert current(migrated) == []
    assert set(sa.inspect(migrated.engine).get_table_names()) <= {"alembic_version"}
    assert append_only_guards(migrated) == 0

    assert upgrade(migrated) == heads
    assert schema_differences(database_url) == []
    assert append_only_guards(migrated) == (2 if migrated.dialect == "sqlite" else 1)


def downgrade_to_base(db: Database) -> None:
    config = alembic_config(db)
    with db.write() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")


def append_only_guards(db: Database) -> int:
    """Triggers guarding referral_events (plus, on PostgreSQL, their function)."""
    with db.read() as conn:
        if db.dialect == "sqlite":
            query = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
            return int(conn.execute(sa.text(query)).scalar_one())
        triggers = conn.execute(sa.text(
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal")).scalar_one()
        functions = conn.execute(sa.text(
            "SELECT count(*) FROM pg_proc WHERE proname = 'refloop_append_only'")).scalar_one()
        assert functions == triggers, "the trigger function outlived its trigger (or vice versa)"
        return int(triggers)


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in a Python file (relative ones stay inside)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_core_imports_no_adapter() -> None:
    files = sorted((ROOT / "referrals").rglob("*.py"))
    assert any(p.name == "0002_subscriptions.py" for p in files)  # the scan reaches migrations
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & NOT_FOR_THE_CORE)
                 for p in files}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_migrations_import_nothing_from_the_project() -> None:
    files = sorted((ROOT / "referrals" / "migrations" / "versions").glob("[0-9]*.py"))
    assert len(files) >= 5
    offenders = {p.name: sorted(imported_packages(p) - MIGRATION_IMPORTS - sys.stdlib_module_names)
                 for p in files}
    assert {name: names for name, names in offenders.items() if names} == {}


def test_the_import_scan_sees_an_adapter_import(tmp_path: Path) -> None:
    """The scans above can fail: each import form is caught."""
    sample = tmp_path / "sample.py"
    sample.write_text("import hl7_bridge.tables\nfrom smart_app import tables\n"
                      "from . import sibling\nimport sqlalchemy as sa\n")
    assert imported_packages(sample) == {"hl7_bridge", "smart_app", "sqlalchemy"}
