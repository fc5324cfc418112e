"""Fixtures for the interop tests: a real HAPI FHIR JPA server (interop/hapi) as the peer.

``hapi_base_url`` (session scope) builds the peer if needed and starts it on a free loopback port
with ``interop/hapi/run start PORT``; it stops it when the session ends. The first build downloads
about 300 MB of Maven artifacts; start-up takes about 20-30 s on two cores.

Without ``java`` or ``mvn`` the interop tests are skipped, unless ``REFLOOP_REQUIRE_INTEROP=1``,
in which case they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HAPI_DIR = REPO_ROOT / "interop" / "hapi"
RUN_SCRIPT = HAPI_DIR / "run"
INTEROP_DIR = Path(__file__).resolve().parent

MISSING_TOOLS_REASON = "interop: Java 17 and Maven are needed to run the HAPI FHIR peer"

# A cold first build (Maven downloads) plus the JVM start-up can take several minutes; the
# session fixture's set-up is counted against the first interop test's timeout.
INTEROP_TEST_TIMEOUT_S = 900
BUILD_TIMEOUT_S = 1200
START_TIMEOUT_S = 240


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_timeout_plugin = config.pluginmanager.hasplugin("timeout")
    for item in items:
        try:
            Path(str(item.path)).resolve().relative_to(INTEROP_DIR)
        except ValueError:
            continue
        item.add_marker(pytest.mark.interop)
        if has_timeout_plugin and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(INTEROP_TEST_TIMEOUT_S))


def _missing_tools_outcome() -> None:
    if os.environ.get("REFLOOP_REQUIRE_INTEROP") == "1":
        pytest.fail(MISSING_TOOLS_REASON, pytrace=False)
    pytest.skip(MISSING_TOOLS_REASON)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


@pytest.fixture(scope="session")
def hapi_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """FHIR base URL (``http://127.0.0.1:PORT/fhir``) of a running HAPI FHIR JPA server (R4)."""
    if shutil.which("java") is None or shutil.which("mvn") is None:
        _missing_tools_outcome()

    data_dir = tmp_path_factory.mktemp("hapi-peer")
    env = dict(os.environ)
    # Own pid file and log per session, so a peer started by hand (run start) is left alone.
    env["HAPI_PEER_DATA_DIR"] = str(data_dir)
    env["HAPI_PEER_START_TIMEOUT"] = str(START_TIMEOUT_S)

    build = subprocess.run(
        ["bash", str(RUN_SCRIPT), "build"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(
            "interop: building the HAPI FHIR peer failed:\n"
            f"{build.stdout}\n{_tail(data_dir / 'build.log')}",
            pytrace=False,
        )

    port = _free_port()
    start = subprocess.run(
        ["bash", str(RUN_SCRIPT), "start", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S + 60,
        check=False,
    )
    if start.returncode != 0:
        subprocess.run(["bash", str(RUN_SCRIPT), "stop"], env=env, check=False, capture_output=True)
        pytest.fail(
            "interop: starting the HAPI FHIR peer failed:\n"
            f"{start.stderr}\n{_tail(data_dir / 'hapi.log')}",
            pytrace=False,
        )
    lines = start.stdout.strip().splitlines()
    base_url = lines[-1].strip() if lines else ""
    assert base_url == f"http://127.0.0.1:{port}/fhir", (
        f"unexpected output of run start: {start.stdout!r}"
    )

    try:
        yield base_url
    finally:
        subprocess.run(
            ["bash", str(RUN_SCRIPT), "stop"],
            env=env,
            check=False,
            capture_output=True,
            timeout=90,
        )
