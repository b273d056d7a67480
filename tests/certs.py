"""A test PKI made with ``cryptography``: CA, host certificate, user certificate, RFC 3820 proxy.

Written the way grid sites lay them out: a hashed CA directory (like
/etc/grid-security/certificates) and a proxy file holding proxy cert, proxy key and user cert.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

USER_DN = "/DC=org/DC=pandawms/OU=Users/CN=Jane Doe"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(*parts: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    """Paths of everything the TLS tests need."""

    ca_dir: Path
    host_cert: Path
    host_key: Path
    user_cert: Path
    user_key: Path
    proxy: Path
    ca_cert: x509.Certificate | None = None
    ca_key: rsa.RSAPrivateKey | None = None

    def add_user(self, common_name: str) -> Path:
        """Another user's certificate and key in one PEM file (usable with curl --cert/--key)."""
        assert self.ca_cert is not None and self.ca_key is not None
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        key = _key()
        name = _name(
            (NameOID.DOMAIN_COMPONENT, "org"),
            (NameOID.DOMAIN_COMPONENT, "pandawms"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "Users"),
            (NameOID.COMMON_NAME, common_name),
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        path = self.ca_dir.parent / (common_name.replace(" ", "_") + ".pem")
        path.write_bytes(_pem(cert) + _pem_key(key))
        path.chmod(0o600)
        return path


def make_pki(root: Path) -> Pki:
    """Create the CA, host, user and proxy files under ``root``."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    later = now + dt.timedelta(days=2)
    ca_key = _key()
    ca_name = _name(
        (NameOID.DOMAIN_COMPONENT, "org"),
        (NameOID.DOMAIN_COMPONENT, "pandawms"),
        (NameOID.COMMON_NAME, "pandawms Test CA"),
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )

    host_key = _key()
    host = (
        x509.CertificateBuilder()
        .subject_name(
            _name(
                (NameOID.DOMAIN_COMPONENT, "org"),
                (NameOID.DOMAIN_COMPONENT, "pandawms"),
                (NameOID.COMMON_NAME, "localhost"),
            )
        )
        .issuer_name(ca_name)
        .public_key(host_key.public_key())
        .serial_number(2)
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    user_key = _key()
    user_name = _name(
        (NameOID.DOMAIN_COMPONENT, "org"),
        (NameOID.DOMAIN_COMPONENT, "pandawms"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "Users"),
        (NameOID.COMMON_NAME, "Jane Doe"),
    )
    user = (
        x509.CertificateBuilder()
        .subject_name(user_name)
        .issuer_name(ca_name)
        .public_key(user_key.public_key())
        .serial_number(3)
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    # RFC 3820 proxy: subject = user subject + CN=<serial>, signed by the user key,
    # proxyCertInfo with the "inherit all" policy (id-ppl-inheritAll, 1.3.6.1.5.5.7.21.1).
    proxy_key = _key()
    serial = 1234567
    proxy_name = x509.Name(list(user_name) + [x509.NameAttribute(NameOID.COMMON_NAME, str(serial))])
    proxy_info = bytes.fromhex("300c300a06082b06010505071501")
    proxy = (
        x509.CertificateBuilder()
        .subject_name(proxy_name)
        .issuer_name(user_name)
        .public_key(proxy_key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )
        .add_extension(
            x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.5.5.7.1.14"), proxy_info), critical=True
        )
        .sign(user_key, hashes.SHA256())
    )

    root.mkdir(parents=True, exist_ok=True)
    ca_dir = root / "certificates"
    ca_dir.mkdir(exist_ok=True)
    (ca_dir / "pandawms-test-ca.pem").write_bytes(_pem(ca))
    subprocess.run(["openssl", "rehash", str(ca_dir)], check=True, capture_output=True)
    paths = Pki(
        ca_dir,
        root / "hostcert.pem",
        root / "hostkey.pem",
        root / "usercert.pem",
        root / "userkey.pem",
        root / "x509up",
        ca,
        ca_key,
    )
    paths.host_cert.write_bytes(_pem(host))
    paths.host_key.write_bytes(_pem_key(host_key))
    paths.user_cert.write_bytes(_pem(user))
    paths.user_key.write_bytes(_pem_key(user_key))
    paths.proxy.write_bytes(_pem(proxy) + _pem_key(proxy_key) + _pem(user))
    for path in (paths.host_key, paths.user_key, paths.proxy):
        path.chmod(0o600)
    return paths
