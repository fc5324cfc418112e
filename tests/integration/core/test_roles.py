"""Process roles: the HL7 v2 listener runs only when configured, and a role that cannot bind is
an error for that role while `refloop serve` keeps serving the others."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from refloop.roles import adapter_role_names
from refloop.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def test_mllp_role_only_when_configured(sqlite_url: str, tmp_path: Path) -> None:
    plain = Settings(var_dir=tmp_path / "var", database_url=sqlite_url)
    assert "mllp" not in adapter_role_names(plain)
    configured = Settings(var_dir=tmp_path / "var", database_url=sqlite_url,
                          sections={"hl7": {"port": 2575}})
    assert "mllp" in adapter_role_names(configured)
    switched_off = Settings(var_dir=tmp_path / "var", database_url=sqlite_url,
                            sections={"hl7": {"port": 2575, "enabled": False}})
    assert "mllp" not in adapter_role_names(switched_off)


def test_serve_keeps_serving_when_the_mllp_port_is_taken(sqlite_url: str,
                                                         tmp_path: Path) -> None:
    with socket.socket() as taken, socket.socket() as probe:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        probe.bind(("127.0.0.1", 0))
        http_port = probe.getsockname()[1]
        probe.close()
        env = {**os.environ, "REFLOOP_CONFIG": "", "REFLOOP_HTTP_PORT": str(http_port),
               "REFLOOP_DATABASE_URL": sqlite_url, "REFLOOP_VAR_DIR": str(tmp_path / "var"),
               "REFLOOP_WEB_WORKERS": "1", "REFLOOP_HL7__PORT": str(taken.getsockname()[1]),
               "PYTHONPATH": str(ROOT)}
        server = subprocess.Popen([sys.executable, "-m", "refloop", "serve"], env=env,
                                  cwd=tmp_path, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, start_new_session=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(
            line.decode() for line in iter(server.stderr.readline, b"")), daemon=True)
        reader.start()
        try:
            assert _ready(f"http://127.0.0.1:{http_port}/readyz", server, 90)
            deadline = time.monotonic() + 60
            while not any("role cannot start:" in line for line in lines) and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # longer than the supervisor's 0.5 s look at its children
            assert server.poll() is None, "refloop serve exited because one role failed"
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz",
                                        timeout=5) as reply:
                assert reply.status == 200
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
            reader.join(timeout=10)
    stderr = "".join(lines)
    assert "roles: web, worker, mllp" in stderr
    assert "the mllp role cannot start" in stderr
    assert "address already in use" in stderr.lower()


def _ready(url: str, server: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False
