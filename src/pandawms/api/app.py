"""The ASGI application: routing, body limits, parsing, identity, encoding, errors, access log.

Two URL families share one core: ``/api/v1/<module>/<method>`` (JSON envelope) and
``/server/panda/<method>`` (PanDA's legacy dispatcher replies). Handlers run in a thread pool
because the database layer is synchronous, except the hot pilot calls, which are ``async``
(``LegacyCalls.async_method``, an ``async def`` v1 handler) and wait on the worker's group commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any, Protocol, cast

import anyio
import orjson
from anyio import CapacityLimiter, to_thread
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from pandawms.api import authz, crosssite, errors, legacy, v1
from pandawms.api.auth import Authenticator
from pandawms.api.context import RequestContext
from pandawms.api.encoding import dumps_plain, dumps_v1, urlencode_reply
from pandawms.api.headers import RequestHeaders
from pandawms.api.multipart import parse_multipart
from pandawms.api.oidc import UNKNOWN_KID_WAIT, KeysPending, TokenRejected
from pandawms.api.openapi import document
from pandawms.api.params import bind
from pandawms.core.dbthreads import run_db
from pandawms.core.ops import audit
from pandawms.core.queues.catalogue import all_documents, queue_document
from pandawms.core.runtime import Runtime
from pandawms.core.tasks.sandbox import path_for_serving
from pandawms.db.engine import BUSY_ERRORS
from pandawms.model.errors import Busy, PandaError, StatusCode, TooLarge, Unsupported
from pandawms.monitor.metrics import registry_of
from pandawms.monitor.web import handle as monitor

log = logging.getLogger("pandawms.api")
access_log = logging.getLogger("pandawms.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTooLarge(TooLarge):
    """The request body exceeds ``max_body_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")


async def _read_body(receive: Receive, limit: int, declared: str | None) -> bytes:
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge(limit)
        except ValueError:
            raise PandaError("Content-Length is not a number") from None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise PandaError("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


#: Seconds a submission may wait for a free lane before the answer is 503 + Retry-After.
_SUBMIT_WAIT_S = 60.0


def _declared_length(headers: Headers) -> int:
    try:
        return int(headers.get("content-length") or 0)
    except ValueError:
        return 0


class _BodyReader:
    """The request's ``receive``, noting whether the whole body has been read."""

    __slots__ = ("_receive", "finished")

    def __init__(self, receive: Receive, headers: Headers) -> None:
        self._receive = receive
        length = headers.get("content-length")
        self.finished = "transfer-encoding" not in headers and (length is None or length.strip() == "0")

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.finished = True
        return message


#: Bodies larger than this are parsed in a thread: orjson holds the event loop for a while
#: on megabytes (about 40 ms for 15 MiB here), during which the worker answers nobody.
_PARSE_ON_LOOP_MAX = 256 * 1024
#: At most this many big bodies are parsed at once per worker: each becomes several times its
#: size in Python objects, and the request threads stay free for everyone else.
_BIG_PARSES = 2


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress with a ceiling, so a small bomb cannot become gigabytes."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise PandaError(f"body is not valid gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(limit)
    return out


def _query(scope: Scope) -> dict[str, Any]:
    pairs = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return _collect(pairs)


def _collect(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            existing = out[key]
            out[key] = existing + [value] if isinstance(existing, list) else [existing, value]
        else:
            out[key] = value
    return out


def _load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PandaError(f"failed to load JSON: {exc}") from None


def _form(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PandaError("form body is not UTF-8") from None
    try:
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=10000
        )
    except ValueError as exc:
        raise PandaError(f"malformed form body: {exc}") from None
    return _collect(pairs)


def _method_label(path: str) -> str:
    """A bounded metrics label for a path: the API method, or the kind of static path."""
    parts = path.strip("/").split("/")
    if len(parts) == 4 and parts[:2] == ["api", "v1"]:
        known = (parts[2], parts[3]) in v1.METHODS
        return f"v1/{parts[2]}/{parts[3]}" if known else "v1/unknown"
    if len(parts) == 3 and parts[:2] == ["server", "panda"]:
        known_legacy = parts[2] in legacy.METHODS or parts[2] in legacy.ASYNC_METHODS
        return f"legacy/{parts[2]}" if known_legacy else "legacy/unknown"
    if parts[0] in ("cache", "monitor", "metrics", "health"):
        return parts[0]
    return "other"


def _verb_accepted(declared: str, verb: str) -> bool:
    """Whether ``verb`` may call a v1 method declared with ``declared`` ("ANY": either verb).

    A GET method also takes POST (its arguments in a JSON body), as panda-client sends some so.
    """
    if verb == "HEAD" or verb == declared or declared == "ANY":
        return verb in ("GET", "POST", "HEAD")
    return declared == "GET" and verb == "POST"


def _media_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


class PandaApp:
    """ASGI callable serving the PanDA APIs for one :class:`Runtime`."""

    def __init__(self, rt: Runtime, stats: RequestStats | None = None) -> None:
        self.rt = rt
        #: The runtime's request metrics, bound here and passed to whoever needs them.
        self.metrics = registry_of(rt)
        self.max_body = rt.settings.max_body_bytes
        self.stats = stats
        self.auth = Authenticator(rt.settings, rt.engine)
        self.strict = rt.settings.auth_mode == "strict"
        self._openapi: bytes | None = None
        self._retry_after = [(b"retry-after", str(rt.settings.busy_retry_after).encode())]
        self._big_parses: CapacityLimiter | None = None
        self._lane: CapacityLimiter | None = None

    def _answer(self, exc: BaseException, request_id: str, what: str) -> errors.Answer:
        """What to tell the client about ``exc`` (see :mod:`pandawms.api.errors`), logged."""
        answer = errors.answer(exc, self.rt.settings, request_id)
        if answer.outcome == errors.Outcome.REFUSED:
            log.info("%s %s refused: %s", request_id, what, answer.message)
        elif answer.outcome == errors.Outcome.BUSY:
            log.error("%s %s database busy or failing: %s", request_id, what, exc)
        elif answer.outcome == errors.Outcome.DB_REFUSED:
            log.warning("%s %s refused by the database: %s", request_id, what, exc)
        else:
            log.error("%s %s failed", request_id, what, exc_info=exc)
        return answer

    def _explain_plain(self, exc: BaseException, request_id: str) -> tuple[int, str, bool]:
        """(status, message, retry) for ``exc`` on a page that is not an API reply (the monitor)."""
        answer = self._answer(exc, request_id, "monitor")
        return answer.status, answer.message, answer.retry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:12]
        headers = RequestHeaders(scope)
        if self.stats is not None:
            self.stats.begin()
        body = b""
        reader = _BodyReader(receive, headers)
        try:
            status, body, content_type, extra = await self._handle(scope, reader.receive, headers, request_id)
            response_headers = [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
                *extra,
            ]
            if not reader.finished:
                # Refused before its body was read: close rather than read and discard the rest.
                response_headers.append((b"connection", b"close"))
            await send({"type": "http.response.start", "status": status, "headers": response_headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            if self.stats is not None:
                self.stats.end(len(body))
        elapsed = time.perf_counter() - started
        self.metrics.record(_method_label(scope.get("path", "")), status, elapsed)
        client = scope.get("client") or ("-", 0)
        access_log.info(
            "%s %s %s %s %d %d %.1fms",
            request_id,
            client[0],
            scope.get("method"),
            scope.get("path"),
            status,
            len(body),
            elapsed * 1000,
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.rt.engine.dispose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(
        self, scope: Scope, receive: Receive, headers: Headers, request_id: str
    ) -> tuple[int, bytes, str, list[tuple[bytes, bytes]]]:
        path: str = scope.get("path", "")
        parts = path.strip("/").split("/")
        if path == "/api/v1/openapi.json":
            if self._openapi is None:
                self._openapi = dumps_v1(document())
            return 200, self._openapi, "application/json", [(b"cache-control", b"public, max-age=3600")]
        if len(parts) == 4 and parts[0] == "api" and parts[1] == "v1":
            return await self._v1(scope, receive, headers, request_id, parts[2], parts[3])
        if len(parts) == 3 and parts[0] == "server" and parts[1] == "panda":
            return await self._legacy(scope, receive, headers, request_id, parts[2])
        if path.startswith("/cache/schedconfig/"):
            return await run_in_threadpool(self._schedconfig, path[len("/cache/schedconfig/") :], headers)
        if path.startswith("/cache/") and scope.get("method", "GET") in ("GET", "HEAD"):
            return await run_in_threadpool(self._cached_file, path[len("/cache/") :])
        if path == "/metrics" or path == "/monitor" or path.startswith("/monitor/"):
            if self.strict and path != "/metrics":
                try:
                    authz.check(
                        authz.PATH_RULES["monitor"],
                        (await self._context_waiting(scope, headers, request_id, False)).who,
                        "the monitor",
                    )
                except PandaError as exc:
                    return errors.status_of(exc), f"ERROR : {exc.message}\n".encode(), "text/plain", []
            return await monitor(
                self, scope, headers, request_id, partial(self._explain_plain, request_id=request_id)
            )
        if path == "/health":
            return await run_in_threadpool(self._health)
        if path == "/":
            return 200, b"pandawms\n", "text/plain", []
        return 404, f"ERROR : no such path {path[:200]}\n".encode(), "text/plain", []

    async def _audit(
        self, ctx: RequestContext, method: str, kwargs: dict[str, Any], outcome: str, message: str
    ) -> None:
        try:
            await run_in_threadpool(
                audit.record,
                self.rt,
                ctx.who,
                method,
                audit.describe_targets(kwargs),
                outcome,
                message,
                ctx.request_id,
            )
        except BUSY_ERRORS:
            log.error("%s could not write the audit record of %s", ctx.request_id, method)

    def _schedconfig(self, name: str, headers: Headers) -> tuple[int, bytes, str, list[tuple[bytes, bytes]]]:
        """Queue definitions as pilots fetch them: cacheable, with an ETag for revalidation."""

        if name == "schedconfig.all.json":
            found: tuple[str, str] | None = all_documents(self.rt)
        else:
            queue, dot, kind = name.partition(".")
            if not dot or kind not in ("all.json", "pilot.json"):
                return 404, b"ERROR : unknown schedconfig file\n", "text/plain", []
            found = queue_document(self.rt, queue)
        if found is None:
            return 404, f"ERROR : no queue {name[:100]}\n".encode(), "text/plain", []
        body, etag = found
        tag = f'"{etag}"'
        cache = [(b"etag", tag.encode()), (b"cache-control", b"public, max-age=300")]
        if headers.get("if-none-match") == tag:
            return 304, b"", "application/json", cache
        return 200, body.encode(), "application/json", cache

    def _cached_file(self, name: str) -> tuple[int, bytes, str, list[tuple[bytes, bytes]]]:
        """A sandbox from the cache; names are unique per upload, so caches may keep them a while."""

        try:
            path = path_for_serving(self.rt, urllib.parse.unquote(name))
            body = path.read_bytes()
        except PandaError as exc:
            return errors.status_of(exc), f"ERROR : {exc.message}\n".encode(), "text/plain", []
        except OSError:
            return 404, b"ERROR : cached file is gone\n", "text/plain", []
        if name.startswith("jedilog/"):
            # Worker logs grow while Harvester appends to them: never cached.
            return 200, body, "text/plain; charset=utf-8", [(b"cache-control", b"no-cache")]
        return 200, body, "application/octet-stream", [(b"cache-control", b"public, max-age=3600")]

    def _health(self) -> tuple[int, bytes, str, list[tuple[bytes, bytes]]]:
        """For the load balancer: 503 while the drain file exists or the database does not answer."""
        drain = self.rt.settings.drain_file
        if drain and os.path.exists(drain):
            return 503, b"draining\n", "text/plain", [(b"cache-control", b"no-store")]
        try:
            with self.rt.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except BUSY_ERRORS:
            return 503, b"database unavailable\n", "text/plain", [(b"cache-control", b"no-store")]
        return 200, b"OK\n", "text/plain", [(b"cache-control", b"no-store")]

    def _context(self, scope: Scope, headers: Headers, request_id: str, accept_json: bool) -> RequestContext:
        client = scope.get("client") or ("", 0)
        tls = (scope.get("extensions") or {}).get("tls")
        who = self.auth.identify(headers, client[0], tls)
        return RequestContext(self.rt, who, scope.get("scheme") == "https", accept_json, request_id)

    async def _context_waiting(
        self, scope: Scope, headers: Headers, request_id: str, accept_json: bool
    ) -> RequestContext:
        """:meth:`_context`, waiting without blocking the loop for token keys being fetched."""
        try:
            return self._context(scope, headers, request_id, accept_json)
        except KeysPending as pending:
            try:
                # shield: a waiter giving up must not cancel the fetch others wait for too
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(pending.done)), UNKNOWN_KID_WAIT)
            except TimeoutError:
                raise TokenRejected(
                    f"{pending.message[len('token rejected: ') :]}; none arrived in time"
                ) from None
        return self._context(scope, headers, request_id, accept_json)

    # --- v1 -------------------------------------------------------------------------------

    async def _v1(
        self, scope: Scope, receive: Receive, headers: Headers, request_id: str, module: str, name: str
    ) -> tuple[int, bytes, str, list[tuple[bytes, bytes]]]:
        def reply(status: int, success: bool, message: str, data: Any) -> tuple[int, bytes, str, list]:
            body = dumps_v1({"success": success, "message": message, "data": data})
            return status, body, "application/json", []

        method = v1.METHODS.get((module, name))
        if method is None:
            return reply(404, False, f"no such method: {module}/{name}", None)
        verb = scope.get("method", "GET")
        rule = method.rule
        ctx: RequestContext | None = None
        given: dict[str, Any] = {}
        handled = False
        try:
            # Browser marks and body types first (no state, no database): a form or a HEAD that
            # another site makes a victim's browser send never reaches a write.
            crosssite.check_v1(verb, method.verb, _media_type(headers), headers)
            # Who may call is known from the connection and headers: refuse before the body is
            # read, so an anonymous client cannot make the server buffer and parse megabytes.
            ctx = await self._context_waiting(scope, headers, request_id, True)
            if self.strict:
                authz.check(rule, ctx.who, f"{module}/{name}")
            # A wrong verb, argument or type is answered as the real server does: HTTP 200 with
            # success false and the reason. panda-client treats any other status as a lost
            # connection and would hide the reason from the user.
            if not _verb_accepted(method.verb, verb):
                expected = "GET or POST" if method.verb == "ANY" else method.verb
                return reply(200, False, f"expecting {expected}, received {verb}", None)
            given, from_text = await self._v1_params(scope, receive, headers, verb)
            try:
                if _declared_length(headers) > _PARSE_ON_LOOP_MAX:
                    # parameters that are JSON text (a submission's jobs) are parsed off the loop
                    kwargs = await self._off_loop(bind, method.params, given, from_text)
                else:
                    kwargs = bind(method.params, given, from_text)
            except PandaError as exc:
                if errors.status_of(exc) != 400:
                    raise
                log.info("%s %s/%s refused: %s", request_id, module, name, exc.message)
                return reply(200, False, exc.message, None)
            given = kwargs
            handled = True
            if method.on_loop:
                success, message, data = await cast(v1.AsyncHandler, method.handler)(ctx, **kwargs)
            elif method.submission:
                success, message, data = await self._submission(method.handler, ctx, kwargs)
            else:
                success, message, data = await run_db(
                    self.rt, cast(v1.Handler, method.handler), ctx, **kwargs
                )
            if rule.audit:
                targets = method.targets(kwargs, data) if method.targets and success else kwargs
                outcome, note = audit.outcome_of(success, data)
                await self._audit(ctx, f"{module}/{name}", targets, outcome, note or message)
            return reply(200, success, message, data)
        except Exception as exc:
            answer = self._answer(exc, request_id, f"{module}/{name}")
            if answer.outcome == errors.Outcome.REFUSED and rule.audit and ctx is not None:
                await self._audit(ctx, f"{module}/{name}", given, "refused", answer.message)
            # Refusals of a well-formed request (bad values, unknown or busy targets) are
            # answered in the envelope; identity, size and parsing problems keep their status.
            status = 200 if answer.envelope and handled else answer.status
            status, body, ctype, _ = reply(status, False, answer.message, None)
            return status, body, ctype, self._retry_after if answer.retry else []

    async def _v1_params(
        self, scope: Scope, receive: Receive, headers: Headers, verb: str
    ) -> tuple[dict[str, Any], bool]:
        if verb in ("GET", "HEAD"):
            return _query(scope), True
        body = await _read_body(receive, self.max_body, headers.get("content-length"))
        if headers.get("content-encoding", "").lower() == "gzip":
            body = _gunzip(body, self.max_body)
        query = _query(scope)
        media = _media_type(headers)
        if not body.strip():
            return query, True
        if media == "multipart/form-data":
            return {
                **query,
                **await self._parse(parse_multipart, body, headers.get("content-type", "")),
            }, True
        if media == "application/x-www-form-urlencoded":
            return {**query, **await self._parse(_form, body)}, True
        data = await self._parse(_load_json, body)
        if not isinstance(data, dict):
            raise PandaError("the JSON body must be an object of named arguments")
        return {**query, **data}, False

    # --- legacy ---------------------------------------------------------------------------

    async def _legacy(
        self, scope: Scope, receive: Receive, headers: Headers, request_id: str, name: str
    ) -> tuple[int, bytes, str, list[tuple[bytes, bytes]]]:
        accept_json = "application/json" in headers.get("accept", "")

        def render(status: int, reply: legacy.Reply) -> tuple[int, bytes, str, list]:
            form = reply.form
            if form == "text":
                return status, str(reply.body).encode(), "text/plain", []
            if form == "json" or (form == "negotiate" and accept_json) or not isinstance(reply.body, dict):
                return status, dumps_plain(reply.body), "application/json", []
            return status, urlencode_reply(reply.body), "text/plain", []

        handler = legacy.METHODS.get(name)
        on_loop = legacy.ASYNC_METHODS.get(name)
        if handler is None and on_loop is None:
            return render(
                404,
                legacy.Reply(
                    {
                        "StatusCode": int(StatusCode.INVALID),
                        "errorDialog": f"method {name[:100]} is not known",
                    }
                ),
            )
        try:
            crosssite.check_legacy(name, scope.get("method", "GET"), headers)
            ctx = await self._context_waiting(scope, headers, request_id, accept_json)
            if self.strict:
                authz.check(legacy.RULES.get(name, authz.NO_RULE), ctx.who, name)
            params = await self._legacy_params(scope, receive, headers)
            if on_loop is not None:
                return render(200, await on_loop(ctx, params))
            assert handler is not None
            return render(200, await run_db(self.rt, handler, ctx, params))
        except Exception as exc:
            answer = self._answer(exc, request_id, name)
            status, body, ctype, _ = render(
                answer.status, legacy.Reply({"StatusCode": answer.code, "errorDialog": answer.message})
            )
            return status, body, ctype, self._retry_after if answer.retry else []

    async def _legacy_params(self, scope: Scope, receive: Receive, headers: Headers) -> dict[str, Any]:
        query = _query(scope)
        if scope.get("method", "GET") in ("GET", "HEAD"):
            return query
        body = await _read_body(receive, self.max_body, headers.get("content-length"))
        media = _media_type(headers)
        if body[:2] == b"\x1f\x8b":
            # pilot 3.11 gzips its JSON body without saying so in Content-Encoding.
            body = _gunzip(body, self.max_body)
        if not body.strip():
            return query
        if media == "application/json" or body.lstrip()[:1] == b"{":
            data = await self._parse(_load_json, body)
            if not isinstance(data, dict):
                raise PandaError("the JSON body must be an object of named parameters")
            # Legacy handlers compare flags with "True"/"False", as the real server does.
            return {**query, **{k: (str(v) if isinstance(v, bool) else v) for k, v in data.items()}}
        if media == "multipart/form-data":
            raise Unsupported("multipart bodies are only accepted for file uploads")
        return {**query, **await self._parse(_form, body)}

    async def _submission(
        self, handler: Callable[..., Any], ctx: RequestContext, kwargs: dict[str, Any]
    ) -> Any:
        """Run a submission (a v1 method declared ``submission=True``) in the submission lane.

        At most ``submit_lanes`` submissions run at once, each in one of the worker's database
        places (:func:`pandawms.core.dbthreads.run_db`) like any other database work: in threads
        of their own they made the pool open an overflow connection whenever every place was
        busy (3 new sessions in a 10-minute soak, benchmarks/README.md).
        """
        if self._lane is None:
            self._lane = CapacityLimiter(self.rt.settings.submit_lanes)
        try:
            with anyio.fail_after(_SUBMIT_WAIT_S):
                await self._lane.acquire()
        except TimeoutError:
            raise Busy(
                f"server busy with other submissions; retry after {self.rt.settings.busy_retry_after} s"
            ) from None
        try:
            return await run_db(self.rt, lambda: handler(ctx, **kwargs))
        finally:
            self._lane.release()

    async def _parse(self, parser: Callable[..., Any], body: bytes, *args: Any) -> Any:
        """``parser(body, *args)``, in a thread of its own lane when the body is big."""
        if len(body) <= _PARSE_ON_LOOP_MAX:
            return parser(body, *args)
        return await self._off_loop(parser, body, *args)

    async def _off_loop(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` in the lane for big parses (:data:`_BIG_PARSES` at once)."""
        if self._big_parses is None:
            self._big_parses = CapacityLimiter(_BIG_PARSES)
        return await to_thread.run_sync(func, *args, limiter=self._big_parses)


class RequestStats(Protocol):
    """Where the app reports each request (the httpd's shared counters)."""

    def begin(self) -> None: ...

    def end(self, sent_bytes: int) -> None: ...


def create_app(rt: Runtime, stats: RequestStats | None = None) -> PandaApp:
    """The ASGI app for ``rt``."""
    return PandaApp(rt, stats)


__all__ = ["PandaApp", "create_app"]
