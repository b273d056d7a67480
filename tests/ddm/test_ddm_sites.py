"""Queue <-> RSE mapping from the queue definitions (CRIC's astorages and the older ddm field)."""

from __future__ import annotations

import json

import pytest

from pandawms.core.queues.catalogue import load_queues
from pandawms.core.queues.storages import QueueStorage, queue_storage, queues_reading, storage_of
from pandawms.core.runtime import Runtime
from pandawms.ddm import DDMNotConfigured, make_ddm, parse_did
from pandawms.ddm.interface import DDMError

QUEUES = {
    "SITE_A_PROD": {
        "status": "online",
        "astorages": {
            "pr": ["PANDAWMS_DISK_A"],
            "pw": ["PANDAWMS_DISK_A"],
            "read_lan": ["PANDAWMS_DISK_A", "PANDAWMS_TAPE"],
            "write_lan": ["PANDAWMS_DISK_B"],
        },
    },
    "SITE_B_ANALY": {
        "status": "online",
        "astorages": {"read_lan_analysis": ["PANDAWMS_DISK_B"], "write_lan_analysis": ["PANDAWMS_DISK_B"]},
    },
    "SITE_C_OLD": {"status": "online", "ddm": "PANDAWMS_DISK_B, PANDAWMS_DISK_A"},
    "SITE_D_OFF": {"status": "offline", "astorages": {"read_lan": ["PANDAWMS_DISK_A"]}},
}


def test_storage_of_reads_astorages_and_the_legacy_ddm_field() -> None:
    assert storage_of("Q", QUEUES["SITE_A_PROD"]) == QueueStorage(
        "Q", ("PANDAWMS_DISK_A", "PANDAWMS_TAPE"), ("PANDAWMS_DISK_A", "PANDAWMS_DISK_B")
    )
    assert storage_of("Q", QUEUES["SITE_C_OLD"]) == QueueStorage(
        "Q", ("PANDAWMS_DISK_B", "PANDAWMS_DISK_A"), ("PANDAWMS_DISK_B",)
    )
    assert storage_of("Q", {"astorages": "junk", "ddm": 7}) == QueueStorage("Q", (), ())


def test_queue_storage_and_queues_reading_an_rse(rt: Runtime) -> None:
    load_queues(rt, json.dumps(QUEUES))
    storage = queue_storage(rt, "SITE_B_ANALY")
    assert storage is not None
    assert storage.read == ("PANDAWMS_DISK_B",) and storage.write == ("PANDAWMS_DISK_B",)
    assert queue_storage(rt, "NO_SUCH_QUEUE") is None
    # The offline queue reads DISK_A too, but brokerage must not send work there.
    assert queues_reading(rt, "PANDAWMS_DISK_A") == ["SITE_A_PROD", "SITE_C_OLD"]
    assert queues_reading(rt, "PANDAWMS_DISK_A", active_only=False) == [
        "SITE_A_PROD",
        "SITE_C_OLD",
        "SITE_D_OFF",
    ]
    assert queues_reading(rt, "PANDAWMS_TAPE") == ["SITE_A_PROD"]
    assert queues_reading(rt, "NOWHERE") == []


def test_without_rucio_settings_the_refusal_names_them(sqlite_rt: Runtime) -> None:
    with pytest.raises(DDMNotConfigured) as info:
        make_ddm(sqlite_rt.settings)
    assert "PANDA_DDM_RUCIO_HOST" in str(info.value) and "PANDA_DDM_RUCIO_ACCOUNT" in str(info.value)


def test_dataset_names_get_their_scope_like_panda_clients_give_it() -> None:
    assert str(parse_did("user.jdoe.test.data/")) == "user.jdoe:user.jdoe.test.data"
    assert str(parse_did("mc23_13p6TeV.601229.EVNT.e8514")) == "mc23_13p6TeV:mc23_13p6TeV.601229.EVNT.e8514"
    assert str(parse_did("tests:data.1")) == "tests:data.1"
    for bad in ("", ":x", "a:", "x" * 300, "a b", "tests:../etc"):
        with pytest.raises(DDMError):
            parse_did(bad)
