"""Secrets from files, never in logs, and the HTTPS port refusing old TLS (real server processes)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

from pandawms.config import ConfigError, load_settings, mask_url
from pandawms.httpd.tls import make_server_context
from tests.certs import Pki, make_pki
from tests.conftest import free_port

SECRET = "Zq7-never-in-a-log"


def test_secret_settings_come_from_files(tmp_path: Path) -> None:
    password = tmp_path / "db_password"
    password.write_text(SECRET + "\n")
    env = {"PANDA_DB_URL": "postgresql://panda@db.example.org/panda", "PANDA_DB_PASSWORD_FILE": str(password)}
    settings = load_settings(None, environ=env)
    assert settings.db_password == SECRET  # the final newline is not part of it
    assert settings.effective_db_url == f"postgresql://panda:{SECRET}@db.example.org/panda"
    assert settings.masked_db_url == "postgresql://panda:***@db.example.org/panda"
    assert SECRET not in repr(settings) and SECRET not in str(settings.shown())

    url_file = tmp_path / "db_url"
    url_file.write_text(f"postgresql://panda:{SECRET}@db.example.org/panda")
    mq_file = tmp_path / "mq_url"
    mq_file.write_text(f"stomp://panda:{SECRET}@mq.example.org:61613/")
    settings = load_settings(
        None, environ={"PANDA_DB_URL_FILE": str(url_file), "PANDA_MQ_URL_FILE": str(mq_file)}
    )
    assert settings.masked_db_url == "postgresql://panda:***@db.example.org/panda"
    assert settings.shown()["mq_url"] == "stomp://panda:***@mq.example.org:61613/"

    ini = tmp_path / "panda.cfg"
    ini.write_text(f"[server]\ndb_url = mysql://panda@db/panda\ndb_password_file = {password}\n")
    assert load_settings(str(ini), environ={}).effective_db_url == f"mysql://panda:{SECRET}@db/panda"

    with pytest.raises(ConfigError, match="keep one"):
        load_settings(None, environ={**env, "PANDA_DB_PASSWORD": "x"})
    with pytest.raises(ConfigError, match="cannot read the secret file") as missing:
        load_settings(None, environ={"PANDA_DB_PASSWORD_FILE": str(tmp_path / "nope")})
    assert SECRET not in str(missing.value)
    with pytest.raises(ConfigError, match="needs a user name"):
        load_settings(
            None, environ={"PANDA_DB_URL": "postgresql://db/panda", "PANDA_DB_PASSWORD_FILE": str(password)}
        )
    with pytest.raises(ConfigError, match="keep one of them"):
        load_settings(
            None, environ={"PANDA_DB_URL_FILE": str(url_file), "PANDA_DB_PASSWORD_FILE": str(password)}
        )
    assert mask_url("postgresql://u:p@ss/w@h:5/db") == "postgresql://u:***@h:5/db"


def test_the_database_password_appears_in_no_output_or_log(tmp_path: Path) -> None:
    """The services log the database they use, masked; a failing connection is one line, no secret."""
    password = tmp_path / "db_password"
    password.write_text(SECRET)
    log_dir = tmp_path / "log"
    closed = free_port()  # nothing listens there: the connection fails after the URL was logged
    env = {
        **os.environ,
        "PANDA_DB_URL": f"postgresql://panda@127.0.0.1:{closed}/panda",
        "PANDA_DB_PASSWORD_FILE": str(password),
        "PANDA_LOG_DIR": str(log_dir),
        "PANDA_PORT": str(free_port()),
        "PANDA_WORKERS": "1",
    }
    outputs = []
    for command in (["httpd"], ["daemon"], ["db", "check"], ["config", "show"], ["config", "check"]):
        result = subprocess.run(
            [sys.executable, "-m", "pandawms", *command], env=env, capture_output=True, text=True, timeout=60
        )
        outputs.append(result.stdout + result.stderr)
        if command[0] in ("httpd", "daemon", "db"):
            assert result.returncode != 0
            assert "database error: connection failed" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
    logs = [p.read_text() for p in log_dir.iterdir()]
    assert any(f"database postgresql+psycopg://panda:***@127.0.0.1:{closed}/panda" in t for t in logs) or any(
        f"database postgresql://panda:***@127.0.0.1:{closed}/panda" in t for t in logs
    ), logs
    assert "db_password = ***" in outputs[3]
    for text in outputs + logs:
        assert SECRET not in text


def _can_speak_tls11(tmp_path: Path, pki: Pki) -> bool:
    """Whether this Python/OpenSSL can still make a TLS 1.1 handshake at all (with a willing peer)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server.load_cert_chain(pki.host_cert, pki.host_key)
            server.minimum_version = server.maximum_version = ssl.TLSVersion.TLSv1_1
            server.set_ciphers("DEFAULT:@SECLEVEL=0")
            client = _tls11_client()
        except (ssl.SSLError, ValueError):
            return False
    listener = socket.create_server(("127.0.0.1", 0))
    result: list[str] = []

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                result.append(str(tls.version()))
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=5) as raw,
            client.wrap_socket(raw) as tls,
        ):
            return tls.version() == "TLSv1.1"
    except (ssl.SSLError, OSError):
        return False
    finally:
        thread.join(5)
        listener.close()


def _tls11_client() -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        client.minimum_version = client.maximum_version = ssl.TLSVersion.TLSv1_1
        client.set_ciphers("DEFAULT:@SECLEVEL=0")
    return client


def _handshake(port: int, client: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, client.wrap_socket(raw) as tls:
        return str(tls.version())


@pytest.mark.e2e
def test_https_refuses_tls_1_1_and_weak_ciphers(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    settings = load_settings(None, {"tls_cert": str(pki.host_cert), "tls_key": str(pki.host_key)}, environ={})
    context = make_server_context(settings)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    for cipher in context.get_ciphers():  # forward secrecy and AEAD only
        assert cipher["kea"] != "kx-rsa" and cipher["aead"] and not cipher["name"].endswith("-SHA"), cipher
    if not _can_speak_tls11(tmp_path, pki):
        pytest.skip("this OpenSSL cannot make a TLS 1.1 client; checked the context's minimum_version only")

    from tests.e2e.httpd_proc import Httpd

    (tmp_path / "node").mkdir()
    node = Httpd(tmp_path / "node", pki, workers=1)
    try:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            _handshake(node.https_port, _tls11_client())
        weak = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        weak.check_hostname, weak.verify_mode = False, ssl.CERT_NONE
        weak.maximum_version = ssl.TLSVersion.TLSv1_2
        weak.set_ciphers("AES128-SHA:AES256-SHA:AES128-GCM-SHA256")  # RSA key exchange, no forward secrecy
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            _handshake(node.https_port, weak)
        modern = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        modern.load_verify_locations(capath=str(pki.ca_dir))
        modern.check_hostname = False
        assert _handshake(node.https_port, modern) == "TLSv1.3"
        modern.maximum_version = ssl.TLSVersion.TLSv1_2
        assert _handshake(node.https_port, modern) == "TLSv1.2"
    finally:
        node.stop()
