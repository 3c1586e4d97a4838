"""Fixtures: a private HOME, a free port, managers stopped after the test, a
started hello server, and a guard that fails any test leaving a process behind. Plain helpers are in
_helpers.py."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest
from _helpers import APPS, free_port, leftover_processes, preloaders
from upsonic_server_manager import ServerManager


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fails the test if it leaves a server or helper running (and kills it)."""
    before = {p.pid for p in leftover_processes(set())}
    yield
    time.sleep(0.01)
    left = leftover_processes(before)
    if left:
        desc = []
        for p in left:
            try:
                desc.append(f"{p.pid} {p.cmdline()}")
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        pytest.fail("test left processes running: " + "; ".join(desc))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME (where PID files go) and working directory with the apps."""
    h = tmp_path / "home"
    h.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(h))
    # Servers import the test apps through PYTHONPATH and write their logs
    # under a private working directory, never into the repository.
    monkeypatch.setenv("PYTHONPATH", str(APPS))
    monkeypatch.chdir(work)
    monkeypatch.delenv("UPSONIC_WORKERS_AMOUNT", raising=False)
    return h


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def managers() -> Iterator[list]:
    """Managers registered here are stopped after the test even if it fails."""
    ms: list = []
    yield ms
    for m in reversed(ms):
        try:
            m.stop()
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture
def serve(home: Path, managers: list) -> Callable[..., ServerManager]:
    """``serve(name, **kwargs)``: the hello app on 127.0.0.1 and a free port,
    started (ready when it returns), and stopped after the test."""

    def start(name: str, **kwargs: Any) -> ServerManager:
        m = ServerManager("usm_hello:app", "127.0.0.1", free_port(), name, **kwargs)
        managers.append(m)
        m.start()
        return m

    return start


@pytest.fixture
def warm_dir(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private preloader directory (short: a unix socket path is limited),
    with every preloader started in it killed after the test."""
    d = tempfile.mkdtemp(prefix="usmw")
    monkeypatch.setenv("UPSONIC_WARM_DIR", d)
    monkeypatch.setenv("UPSONIC_WARM_IDLE", "120")
    try:
        yield d
    finally:
        for p in preloaders(d):
            p.kill()
            p.wait(10)
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(key file, certificate file): self-signed, for a name that is not
    the address the server is reached at (a health probe must not care)."""
    import datetime

    x509 = pytest.importorskip("cryptography.x509", reason="the test extra installs cryptography")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "usm-test.invalid")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("usm-test.invalid")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    key_file, cert_file = d / "key.pem", d / "cert.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return str(key_file), str(cert_file)
