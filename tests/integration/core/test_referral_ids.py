"""Referral ids: new ones are time-ordered (version 7 UUIDs), so people find them by their short
id, the last 8 characters, which the listings print, on both databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from referrals.ids import short_id
from referrals.model import Command, Referral, new_referral_id
from refloop.cli import main
from refloop.services import Services, build_services
from refloop.settings import Settings

TWINS = ("aaaaaaaa-0000-7000-8000-0000deadbeef", "bbbbbbbb-0000-7000-8000-0000deadbeef")


@pytest.fixture
def services(database_url: str, tmp_path: Path) -> Iterator[Services]:
    built = build_services(Settings(var_dir=tmp_path / "var", database_url=database_url))
    yield built
    built.close()


def opened(services: Services, rid: str) -> str:
    draft = Referral(id=rid, source_key=f"t|ServiceRequest/{rid}",
                     service_request=f"ServiceRequest/{rid}", patient="Patient/p1",
                     specialty="cardiology", priority="routine")
    services.referrals.open(draft, Command("detect"))
    return rid


def test_new_ids_are_version_7_and_found_by_their_short_id(services: Services) -> None:
    made = [opened(services, new_referral_id()) for _ in range(3)]
    assert all(uuid.UUID(rid).version == 7 for rid in made)
    store = services.store
    for rid in made:
        assert store.ids_ending_with(short_id(rid)) == [rid]
        assert store.ids_ending_with(short_id(rid).upper()) == [rid]
        assert store.ids_ending_with(rid[-17:]) == [rid]  # more of the end narrows the same way
    assert store.ids_ending_with(made[0][-7:]) == []  # less than a short id matches nothing
    assert store.ids_ending_with("%%%%%%%%") == []


def test_two_ids_with_one_short_id_are_named_as_ambiguous(services: Services,
                                                          database_url: str,
                                                          tmp_path: Path) -> None:
    for rid in TWINS:
        opened(services, rid)
    assert services.store.ids_ending_with("deadbeef") == list(TWINS)
    config = tmp_path / "refloop.toml"
    config.write_text(f'database_url = "{database_url}"\nvar_dir = "{tmp_path / "var"}"\n',
                      encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "referrals", "show", "deadbeef"])
    assert result.exit_code == 1
    assert "deadbeef is ambiguous: 2 referral ids end with it" in result.output
    whole = CliRunner().invoke(main, ["--config", str(config), "referrals", "show",
                                      "aaaaaaaa", "--json"])
    assert whole.exit_code == 0 and TWINS[0] in whole.stdout


def test_a_piece_shorter_than_a_short_id_names_no_referral(services: Services, database_url: str,
                                                           tmp_path: Path) -> None:
    """`cafe`, the end of a listed short id typed in part, must not act on the older referral
    whose id begins with it: beginnings, like ends, need at least a short id's 8 characters."""
    older, newer = "cafe0000-0000-4000-8000-000000000001", "01a2460e-0001-7000-8000-00000000cafe"
    for rid in (older, newer):
        opened(services, rid)
    config = tmp_path / "refloop.toml"
    config.write_text(f'database_url = "{database_url}"\nvar_dir = "{tmp_path / "var"}"\n',
                      encoding="utf-8")
    part = CliRunner().invoke(main, ["--config", str(config), "referrals", "show", "cafe"])
    assert part.exit_code == 1 and "no referral cafe" in part.output, part.output
    whole = CliRunner().invoke(main, ["--config", str(config), "referrals", "show", "cafe0000",
                                      "--json"])
    assert whole.exit_code == 0 and older in whole.stdout
