"""TLS for the HTTPS port: the server context, and the client identity from its certificate.

Grid clients present X.509 proxies (RFC 3820, or the older "CN=proxy" form) signed by their
user certificate, so the context accepts proxy chains; the identity we record is the user's
(end-entity) DN in the slash form PanDA uses, not the proxy's.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from pandawms.config import Settings

#: RFC 3820 proxyCertInfo extension.
PROXY_CERT_INFO = ObjectIdentifier("1.3.6.1.5.5.7.1.14")
#: Modern AEAD suites for TLS 1.2 (TLS 1.3 suites are fixed by OpenSSL and all good).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"

_SHORT = {
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.USER_ID: "UID",
    NameOID.SERIAL_NUMBER: "serialNumber",
}
_PROXY_CN = re.compile(r"/CN=(proxy|limited proxy|\d+)$")


#: Oldest protocol a client may speak: TLS 1.0 and 1.1 are broken (RFC 8996) and refused.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def make_server_context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.2+ server context with the host certificate; client certificates optional.

    Only forward-secret AEAD suites (no RSA key exchange, no CBC, no SHA-1 MACs), no TLS
    compression (CRIME) and no renegotiation (a client could make us redo handshakes at will).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key or None)
    if settings.tls_ca_dir:
        ctx.load_verify_locations(capath=settings.tls_ca_dir)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.verify_flags |= ssl.VERIFY_ALLOW_PROXY_CERTS
    return ctx


def slash_dn(name: x509.Name) -> str:
    """``/DC=ch/DC=cern/OU=Users/CN=Jane Doe``: the DN in certificate order, OpenSSL's legacy form."""
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            key = _SHORT.get(attr.oid, attr.oid.dotted_string)
            value = attr.value if isinstance(attr.value, str) else attr.value.decode("utf-8", "replace")
            parts.append(f"/{key}={value}")
    return "".join(parts)


def is_proxy(cert: x509.Certificate) -> bool:
    """RFC 3820 proxy (has proxyCertInfo) or a legacy proxy (subject = issuer + CN=proxy)."""
    try:
        cert.extensions.get_extension_for_oid(PROXY_CERT_INFO)
        return True
    except x509.ExtensionNotFound:
        pass
    subject, issuer = slash_dn(cert.subject), slash_dn(cert.issuer)
    return subject.startswith(issuer + "/CN=") and bool(_PROXY_CN.search(subject))


def end_entity_dn(cert: x509.Certificate) -> str:
    """The user's DN behind a (possibly multi-level) proxy, or the certificate's own DN."""
    if not is_proxy(cert):
        return slash_dn(cert.subject)
    dn = slash_dn(cert.issuer)
    while _PROXY_CN.search(dn):
        dn = _PROXY_CN.sub("", dn)
    return dn


def client_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> dict[str, Any] | None:
    """The verified client certificate's DNs, for the request scope; None without one."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    return {
        "client_dn": end_entity_dn(cert),
        "subject_dn": slash_dn(cert.subject),
        "issuer_dn": slash_dn(cert.issuer),
        "proxy": is_proxy(cert),
    }


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def with_client_identity(app: ASGIApp, identity: dict[str, Any] | None) -> ASGIApp:
    """Wrap ``app`` so each request of this connection carries ``scope["extensions"]["tls"]``."""

    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        scope.setdefault("extensions", {})["tls"] = identity or {}
        await app(scope, receive, send)

    return wrapped
