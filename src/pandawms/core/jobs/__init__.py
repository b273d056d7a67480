"""Jobs: submission, dispatch, heartbeats, final reports, retries, kills, the watcher and the archive.

Every job status change goes through :mod:`pandawms.core.jobs.transitions`."""
