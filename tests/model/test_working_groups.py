"""Production working groups from VOMS FQANs (system/get_user_attributes)."""

from __future__ import annotations

from pandawms.model.working_groups import primary_working_group, production_working_groups


def test_groups_with_the_production_role() -> None:
    fqans = [
        "/atlas/Role=NULL/Capability=NULL",
        "/atlas/usatlas/Role=production/Capability=NULL",
        "/atlas/phys-higgs/Role=production/Capability=NULL",
        "/atlas/det-tile/Role=production",
        "/atlas/phys-higgs/Role=production",
        "/cms/other/Role=production",
        "/atlas/perf-egamma/Role=NULL",
    ]
    assert production_working_groups(fqans, "atlas") == [
        "phys-higgs",
        "gr_phys-higgs",
        "det-tile",
        "gr_det-tile",
    ]
    # The last production group of any VO, after its last dash, in lower case.
    assert primary_working_group(fqans) == "other"
    assert primary_working_group(fqans[:4]) == "tile"
    assert production_working_groups(["/atlas/Role=production"], "atlas") == []
    assert primary_working_group([]) is None
