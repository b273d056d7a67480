"""Data management: the DDM interface, its Rucio implementation, and queue-to-RSE mapping.

``make_ddm(settings)`` answers the configured DDM, or raises :class:`DDMNotConfigured` whose
message names the settings to set; callers that need data (tasks over input datasets) turn
that into a clear refusal.
"""

from __future__ import annotations

from typing import Any

from pandawms.ddm.interface import (
    DDM,
    DID,
    DatasetInfo,
    DDMError,
    DDMNotConfigured,
    DDMRefused,
    DIDNotFound,
    FileInfo,
    FileReplicas,
    NewFile,
    RSEInfo,
    Rule,
    RuleNotFound,
    RuleState,
    parse_did,
)

__all__ = [
    "DDM",
    "DID",
    "DDMError",
    "DDMNotConfigured",
    "DDMRefused",
    "DIDNotFound",
    "DatasetInfo",
    "FileInfo",
    "FileReplicas",
    "NewFile",
    "RSEInfo",
    "Rule",
    "RuleNotFound",
    "RuleState",
    "make_ddm",
    "parse_did",
]


def make_ddm(settings: Any) -> DDM:
    """The DDM the settings configure (Rucio), or DDMNotConfigured naming what to set."""
    from pandawms.ddm.rucio import RucioConfig, RucioDDM

    return RucioDDM(RucioConfig.from_settings(settings))
