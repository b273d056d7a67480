"""Squid as a reverse-proxy cache (port 25085) in front of the cacheable GETs.

Worker nodes of every grid job fetch the same ``/cache/schedconfig/<queue>.all.json`` and the
same sandboxes under ``/cache/``; squid answers the repeats so the servers and the database do
not see that fan-out. The server marks those answers ``Cache-Control: public, max-age=300``
with an ``ETag``, so squid keeps them five minutes and then revalidates cheaply (304). Anything
else (POSTs, the APIs) passes through uncached.
"""

from __future__ import annotations

from collections.abc import Sequence

from pandawms.api.auth import DN_HEADER, FQAN_HEADER


def render_squid(
    origins: Sequence[tuple[str, int]],
    listen_port: int = 25085,
    *,
    bind_address: str = "",
    visible_hostname: str = "pandawms-cache",
    cache_mem_mb: int = 256,
    cache_dir: str = "",
    cache_dir_mb: int = 4096,
    log_dir: str = "/var/log/squid",
    pid_file: str = "/run/squid.pid",
    effective_user: str = "",
    shutdown_seconds: int = 5,
) -> str:
    """The text of a ``squid.conf`` caching ``/cache/`` GETs from ``origins`` (``(host, http_port)``).

    With several origins squid spreads misses round-robin over them. ``cache_dir`` empty keeps
    the cache in memory only (``cache_mem_mb``), which needs no ``squid -z``; a path adds a disk
    cache of ``cache_dir_mb``. ``log_dir`` gets ``access.log`` (``TCP_MEM_HIT``, ``TCP_MISS``...)
    and ``cache.log``. Each instance needs its own ``pid_file``.
    """
    if not origins:
        raise ValueError("render_squid needs at least one origin server")
    listen = f"{bind_address}:{listen_port}" if bind_address else str(listen_port)
    log = log_dir.rstrip("/")
    out = [
        "# squid.conf for pandawms, rendered by 'pandawms deploy render' (or render_squid()).",
        f"# Reverse-proxy cache on {listen_port} for /cache/ GETs; everything else passes through.",
        f"http_port {listen} accel defaultsite={visible_hostname} no-vhost",
        f"visible_hostname {visible_hostname}",
        "",
    ]
    for index, (host, port) in enumerate(origins):
        balance = " round-robin" if len(origins) > 1 else ""
        out.append(
            f"cache_peer {host} parent {port} 0 no-query no-digest originserver{balance} name=panda{index}"
        )
    out += [
        "never_direct allow all",
        "",
        f"acl panda_port localport {listen_port}",
        "http_access allow panda_port",
        "http_access deny all",
        "",
        "# Cache only GETs (and HEADs) under /cache/; the server sets max-age and ETag on them.",
        "acl panda_cacheable urlpath_regex ^/cache/",
        "acl panda_get method GET HEAD",
        "cache allow panda_cacheable panda_get",
        "cache deny all",
        "refresh_pattern -i /cache/ 0 20% 60",
        "refresh_pattern . 0 0% 0",
        "",
        "# The servers trust DN headers only from configured front ends; never pass on a client's.",
        f"request_header_access {DN_HEADER} deny all",
        f"request_header_access {FQAN_HEADER} deny all",
        "forwarded_for on",
        "",
        f"cache_mem {cache_mem_mb} MB",
        "maximum_object_size_in_memory 64 MB",
        "maximum_object_size 1 GB",
    ]
    if cache_dir:
        out.append(f"cache_dir ufs {cache_dir} {cache_dir_mb} 16 256")
    out += [
        f"coredump_dir {cache_dir or log}",
        f"access_log stdio:{log}/access.log squid",
        f"cache_log {log}/cache.log",
        "cache_store_log none",
        "logfile_rotate 0",
        f"pid_filename {pid_file}",
        "pinger_enable off",
        "netdb_filename none",
        f"shutdown_lifetime {shutdown_seconds} seconds",
    ]
    if effective_user:
        out.append(f"cache_effective_user {effective_user}")
    return "\n".join(out) + "\n"
