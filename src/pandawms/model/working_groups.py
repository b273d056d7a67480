"""Production working groups read from VOMS FQANs, as PanDA derives them.

A user with ``/<vo>/<group>/Role=production`` acts for ``<group>`` (ATLAS's ``usatlas`` group is
the VO-wide production role, not a working group). The real server uses these names for the
``gr_<group>`` working-group ownership of tasks; ``system/get_user_attributes`` shows them so a
user can see what the server will make of their proxy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_GROUP_ROLE = re.compile(r"^/(?P<vo>[^/]+)/(?P<group>[^/]+)/Role=production(?:/|$)")
_NOT_A_GROUP = frozenset({"", "usatlas"})


def production_working_groups(fqans: Iterable[str], vo: str) -> list[str]:
    """``[group, gr_group, ...]`` for each production-role group of ``vo``, in FQAN order."""
    found: list[str] = []
    for fqan in fqans:
        match = _GROUP_ROLE.match(fqan)
        if not match or match["vo"] != vo or match["group"] in _NOT_A_GROUP:
            continue
        group = match["group"]
        if group not in found:
            found += [group, f"gr_{group}"]
    return found


def primary_working_group(fqans: Iterable[str]) -> str | None:
    """The last production-role group of any VO, lower case, after its last ``-`` (or None)."""
    primary = None
    for fqan in fqans:
        match = _GROUP_ROLE.match(fqan)
        if match and match["group"] not in _NOT_A_GROUP:
            primary = match["group"].split("-")[-1].lower()
    return primary
