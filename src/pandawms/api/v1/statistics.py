"""``/api/v1/statistics/*``: job counts by site, cloud, share and resource type.

Names, parameters and answer shapes are the real server's (Harvester's ``get_job_stats`` and
``get_job_stats_new`` read the first two); counts come from :mod:`pandawms.core.jobs.stats`,
which keeps each answer for half a minute.
"""

from __future__ import annotations

from typing import Annotated

from pandawms.api.authz import USER
from pandawms.api.context import RequestContext
from pandawms.api.params import Param
from pandawms.api.v1.registry import Result, V1Module, ok
from pandawms.core.jobs import stats as job_stats

methods = V1Module("statistics")


WINDOW = Param("int", None)


def _window_error(time_window: int | None) -> str | None:
    if time_window is not None and not 0 <= time_window <= job_stats.MAX_WINDOW_MINUTES:
        return (
            'Parameter "time_window" needs to be a positive integer smaller than '
            f"{job_stats.MAX_WINDOW_MINUTES} min (7 days)"
        )
    return None


@methods.get("active_job_stats_by_site", USER)
def active_job_stats_by_site(ctx: RequestContext) -> Result:
    """``{site: {jobStatus: n}}`` of jobs not in a final state."""
    return ok(job_stats.active_by_site(ctx.rt))


@methods.get("active_job_detailed_stats_by_site", USER)
def active_job_detailed_stats_by_site(ctx: RequestContext) -> Result:
    """``{site: {resource_type: {prodSourceLabel: {jobStatus: n}}}}`` of jobs not final."""
    return ok(job_stats.active_detailed_by_site(ctx.rt))


@methods.get("job_stats_by_cloud", USER)
def job_stats_by_cloud(ctx: RequestContext, *, type: str = "production") -> Result:
    """``{cloud: {jobStatus: n}}`` of production or analysis jobs."""
    if type not in ("production", "analysis"):
        return False, 'Parameter "type" needs to be either "production" or "analysis"', {}
    return ok(job_stats.by_cloud(ctx.rt, type))


@methods.get("production_job_stats_by_cloud_and_processing_type", USER)
def production_job_stats_by_cloud_and_processing_type(ctx: RequestContext) -> Result:
    """``{cloud: {processingType: {jobStatus: n}}}`` of production jobs."""
    return ok(job_stats.production_by_cloud_and_processing_type(ctx.rt))


@methods.get("job_stats_by_site_and_resource_type", USER)
def job_stats_by_site_and_resource_type(
    ctx: RequestContext, *, time_window: Annotated[int | None, WINDOW]
) -> Result:
    """``{site: {resource_type: {jobStatus: n}}}``; final jobs of the last ``time_window`` minutes."""
    error = _window_error(time_window)
    if error:
        return False, error, {}
    return ok(job_stats.by_site_and_resource_type(ctx.rt, time_window))


@methods.get("job_stats_by_site_share_and_resource_type", USER)
def job_stats_by_site_share_and_resource_type(
    ctx: RequestContext, *, time_window: Annotated[int | None, WINDOW]
) -> Result:
    """``{site: {prodSourceLabel: {resource_type: {jobStatus: n}}}}``; final jobs of the window."""
    error = _window_error(time_window)
    if error:
        return False, error, {}
    return ok(job_stats.by_site_share_and_resource_type(ctx.rt, time_window))
