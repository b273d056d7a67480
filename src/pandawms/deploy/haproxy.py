"""HAProxy in front of several pandawms httpd nodes.

Every node is identical, so the balancer only has to know which nodes are healthy: it asks each
node's ``/health`` (plain HTTP), which answers 503 while the node's drain file exists or its
database does not answer, and takes the node out of both pools until it says 200 again.

HTTPS comes in two ways. *Passthrough* (the default) forwards the TLS bytes to the node, which
verifies grid proxies itself: the only way RFC 3820 proxy chains work, since HAProxy's verifier
does not accept them. *Terminate* ends TLS at HAProxy and forwards the verified client DN in
``X-SSL-Client-S-DN`` to the nodes' HTTP port; nodes believe that header only from the
addresses in their ``trusted_proxies`` setting. Either way HAProxy deletes those headers from
what clients send, so nobody can claim a DN through it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pandawms.api.auth import DN_HEADER, FQAN_HEADER

#: ``(host, http_port)`` or ``(host, http_port, https_port)``; HTTPS defaults to 25443.
Node = tuple[str, int] | tuple[str, int, int]

#: TLS 1.2 suites with forward secrecy and AEAD, as the nodes themselves use.
_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


def _header_name(name: str) -> str:
    """``x-ssl-client-s-dn`` -> ``X-SSL-Client-S-DN`` (HTTP headers are case-insensitive anyway)."""
    words = name.split("-")
    return "-".join(w.upper() if w in ("x", "ssl", "s", "dn") else w.capitalize() for w in words).replace(
        "Fqans", "FQANs"
    )


def _servers(nodes: Sequence[Node], https: bool, extra: str = "") -> list[str]:
    lines = []
    for index, node in enumerate(nodes, 1):
        host, http_port = node[0], node[1]
        if https:
            https_port = node[2] if len(node) > 2 else 25443
            # The health check talks plain HTTP to the node's HTTP port.
            lines.append(f"    server node{index} {host}:{https_port} check port {http_port}{extra}")
        else:
            lines.append(f"    server node{index} {host}:{http_port} check{extra}")
    return lines


def render_haproxy(
    nodes: Sequence[Node],
    listen_port: int = 25080,
    https_port: int | None = 25443,
    *,
    bind_address: str = "0.0.0.0",
    tls_mode: str = "passthrough",
    tls_pem: str = "",
    tls_ca_file: str = "",
    health_path: str = "/health",
    check_interval_ms: int = 2000,
    fall: int = 2,
    rise: int = 2,
    maxconn: int = 20000,
    stats_socket: str = "",
) -> str:
    """The text of an ``haproxy.cfg`` balancing ``nodes``.

    ``listen_port`` takes plain HTTP (the nodes' 25080); ``https_port`` (None: no HTTPS) takes
    HTTPS, passed through to the nodes' HTTPS port (``tls_mode="passthrough"``) or terminated here
    (``"terminate"``, with ``tls_pem`` = host certificate and key in one file and ``tls_ca_file``
    = the CA bundle client certificates are checked against). A node leaves the pools after
    ``fall`` failed ``/health`` checks ``check_interval_ms`` apart and returns after ``rise``
    good ones. ``stats_socket`` adds an admin socket (``show servers state``, ``disable server``).
    Responses carry ``X-Pandawms-Node`` naming the node that answered (HTTP pools only).
    """
    if not nodes:
        raise ValueError("render_haproxy needs at least one node")
    if tls_mode not in ("passthrough", "terminate"):
        raise ValueError(f"tls_mode must be passthrough or terminate, not {tls_mode!r}")
    if https_port is not None and tls_mode == "terminate" and not (tls_pem and tls_ca_file):
        raise ValueError("tls_mode terminate needs tls_pem (certificate and key) and tls_ca_file")
    dn, fqans = _header_name(DN_HEADER), _header_name(FQAN_HEADER)
    health = [
        "    option httpchk",
        f"    http-check send meth GET uri {health_path} ver HTTP/1.1 hdr Host pandawms-health",
        "    http-check expect status 200",
        # init-addr: a node name that does not resolve yet (a new node) starts as down instead
        # of stopping the whole balancer from starting.
        f"    default-server inter {check_interval_ms}ms fall {fall} rise {rise} init-addr last,libc,none",
    ]
    strip = [
        "    # The nodes trust these headers from this balancer only: drop whatever clients sent.",
        f"    http-request del-header {dn}",
        f"    http-request del-header {fqans}",
        "    http-request del-header X-Forwarded-For",
        "    option forwardfor",
    ]
    out = [
        "# haproxy.cfg for pandawms, rendered by 'pandawms deploy render' (or render_haproxy()).",
        f"# {len(nodes)} node(s); a node whose /health answers 503 (drain file, database down) leaves the pool.",
        "global",
        "    log stdout format raw local0",
        f"    maxconn {maxconn}",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets",
        f"    ssl-default-bind-ciphers {_CIPHERS}",
    ]
    if stats_socket:
        out.append(f"    stats socket {stats_socket} mode 600 level admin")
    out += [
        "",
        "defaults",
        "    log global",
        "    option dontlognull",
        "    option redispatch",
        "    retries 2",
        "    timeout connect 5s",
        "    # Long enough for big uploads and slow clients (the real servers allow 600 s).",
        "    timeout client 600s",
        "    timeout server 600s",
        "    timeout http-request 60s",
        "    timeout queue 30s",
        "",
        "frontend panda_http",
        "    mode http",
        f"    bind {bind_address}:{listen_port}",
        "    option httplog",
        *strip,
        "    default_backend panda_http_nodes",
        "",
    ]
    if https_port is not None and tls_mode == "terminate":
        out += [
            "frontend panda_https",
            "    mode http",
            "    # Client certificates are optional; grid proxies fail HAProxy's check and are let in",
            "    # without a DN (tokens still work). Use passthrough where proxies must be accepted.",
            f"    bind {bind_address}:{https_port} ssl crt {tls_pem} ca-file {tls_ca_file} verify optional"
            " ca-ignore-err all crt-ignore-err all",
            "    option httplog",
            *strip,
            f"    http-request set-header {dn} %[ssl_c_s_dn] if {{ ssl_c_used }} {{ ssl_c_verify 0 }}",
            "    http-request set-header X-Forwarded-Proto https",
            "    default_backend panda_http_nodes",
            "",
        ]
    elif https_port is not None:
        out += [
            "frontend panda_https",
            "    # TLS passes through: each node checks client certificates and proxies itself.",
            "    mode tcp",
            f"    bind {bind_address}:{https_port}",
            "    option tcplog",
            "    default_backend panda_https_nodes",
            "",
            "backend panda_https_nodes",
            "    mode tcp",
            "    balance leastconn",
            *health,
            *_servers(nodes, https=True),
            "",
        ]
    out += [
        "backend panda_http_nodes",
        "    mode http",
        "    balance leastconn",
        *health,
        "    http-response set-header X-Pandawms-Node %s",
        *_servers(nodes, https=False),
    ]
    return "\n".join(out) + "\n"


def parse_nodes(text: str) -> list[Node]:
    """``host:http[:https],...`` (the ``--nodes`` flag) as a node list."""
    nodes: list[Node] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.rsplit(":", 2) if item.count(":") >= 2 else item.rsplit(":", 1)
        try:
            if len(parts) == 3:
                nodes.append((parts[0], int(parts[1]), int(parts[2])))
            elif len(parts) == 2:
                nodes.append((parts[0], int(parts[1])))
            else:
                nodes.append((parts[0], 25080))
        except ValueError:
            raise ValueError(
                f"bad node {item!r}: expected host, host:port or host:http_port:https_port"
            ) from None
    return nodes
