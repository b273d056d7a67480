"""Refusing cross-site requests: a browser holding a user's grid certificate must not be made to act.

A page on any site can make the browser POST an HTML form (url-encoded, multipart or
``text/plain``) to this server, and the browser presents the user's certificate with it. What
such a request cannot do without a CORS preflight (which this server never approves) is carry
``Content-Type: application/json`` or an ``Authorization`` header; and every browser marks it
with ``Origin`` (the page's site) and, over HTTPS, ``Sec-Fetch-Site: cross-site``.

The rules, in one place:

* v1 writes (any POST) need a JSON body type, or a bearer token; a multipart upload
  (panda-client's sandbox upload) is accepted only without browser marks of another site.
* Nothing is accepted, on either API, when the browser's own headers say another site sent it.
* HEAD and GET never write: HEAD on a v1 POST method is 405, and the legacy methods that change
  state (dispatch, heartbeats) need POST.

Real clients are untouched: panda-client and Harvester send JSON (and in token mode an
``Origin`` that is a VO name, not a site); pilots send form bodies with no ``Origin`` or
``Sec-Fetch-Site`` at all (or a bearer token).
"""

from __future__ import annotations

import urllib.parse

from starlette.datastructures import Headers

from pandawms.model.errors import Forbidden, StatusCode, Unsupported, WrongVerb

#: ``Sec-Fetch-Site`` values that mean the request did not come from this server's own pages.
_FOREIGN_FETCH_SITES = frozenset({"cross-site", "same-site"})
#: Legacy methods that only read; every other one changes state and needs POST.
#: (pilot 3.11 asks for a fresh token with a GET of get_access_token)
LEGACY_READS = frozenset(
    {
        "isAlive",
        "getStatus",
        "checkJobStatus",
        "getKeyPair",
        "getProxy",
        "get_access_token",
        "getResourceTypes",
    }
)


class CrossSite(Forbidden):
    """A request a browser was made to send from another site (or in a form a site can forge)."""


class CrossSiteBody(Unsupported):
    """A write whose body type any web page can send (a form), without a bearer token (415)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=StatusCode.PERMS)


class CrossSiteVerb(WrongVerb):
    """A verb a browser can be made to send where the method takes another (405)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=StatusCode.PERMS)


def _has_bearer(headers: Headers) -> bool:
    return headers.get("authorization", "").lower().startswith("bearer ")


def _origin_is_foreign(origin: str, host: str) -> bool:
    """Whether ``Origin`` names a web site other than this server.

    Browsers send ``scheme://host[:port]`` or ``null`` (sandboxed or opaque pages). panda-client
    and pilots in token mode send a VO name (``atlas``), which is no site and no browser's.
    """
    value = origin.strip().lower()
    if value == "null":
        return True
    if "://" not in value:
        return False
    netloc = urllib.parse.urlsplit(value).netloc
    return netloc != host.strip().lower()


def foreign_browser_request(headers: Headers) -> str | None:
    """Why the browser's own headers say another site sent this request; None if they do not."""
    fetch_site = headers.get("sec-fetch-site", "").strip().lower()
    if fetch_site in _FOREIGN_FETCH_SITES:
        return f"Sec-Fetch-Site: {fetch_site}"
    origin = headers.get("origin")
    if origin is not None and _origin_is_foreign(origin, headers.get("host", "")):
        return f"Origin: {origin[:100]}"
    return None


def check_v1(verb: str, declared_verb: str, media_type: str, headers: Headers) -> None:
    """Raise unless a v1 request with this verb and body type may run."""
    reads = ("GET", "ANY")  # methods that only read (ANY: a read that also takes POST)
    if verb == "HEAD" and declared_verb not in reads:
        raise CrossSiteVerb(f"HEAD is only answered for GET methods; this one expects {declared_verb}")
    if verb in ("GET", "HEAD") or declared_verb in reads:
        return  # a read: another site cannot see the answer
    bearer = _has_bearer(headers)
    if not bearer:
        foreign = foreign_browser_request(headers)
        if foreign is not None:
            raise CrossSite(f"cross-site request refused ({foreign})")
    if media_type == "application/json" or bearer:
        return
    if media_type == "multipart/form-data":
        return  # an upload: browsers mark a cross-site one, refused above
    raise CrossSiteBody(
        "a v1 POST needs Content-Type: application/json (or a bearer token); "
        f"got {media_type or 'none'}, which any web page can send"
    )


def check_legacy(name: str, verb: str, headers: Headers) -> None:
    """Raise unless a legacy request may run: no foreign browser marks, and POST to change state."""
    if verb in ("GET", "HEAD") and name not in LEGACY_READS:
        raise CrossSiteVerb(f"{name} changes state and needs POST, not {verb}")
    if _has_bearer(headers):
        return
    foreign = foreign_browser_request(headers)
    if foreign is not None:
        raise CrossSite(f"cross-site request refused ({foreign})")
