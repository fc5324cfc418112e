"""`refloop pas check FILE [--json]` on an official example and a broken copy."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from refloop.wiring.pas import check

EXAMPLE = Path(__file__).resolve().parents[3] / "fixtures" / "pas" / "v2.2.1" / \
    "Bundle-ReferralAuthorizationBundleExample.json"


def test_check_passes_the_official_example() -> None:
    result = CliRunner().invoke(check, [str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "0 errors" in result.output


def test_check_json_lists_errors_with_paths_and_exits_1(tmp_path: Path) -> None:
    bundle = json.loads(EXAMPLE.read_text("utf-8"))
    bundle["entry"][0]["resource"]["use"] = "claim"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(bundle), "utf-8")
    result = CliRunner().invoke(check, [str(broken), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["errors"] == 1
    assert [f["path"] for f in report["findings"] if f["severity"] == "error"] == [
        "Bundle.entry[0].resource.use"]


def test_check_not_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("not json", "utf-8")
    result = CliRunner().invoke(check, [str(bad)])
    assert result.exit_code == 1 and "not JSON" in result.output
