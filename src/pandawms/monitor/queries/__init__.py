"""What the monitor reads from the database, shaped as plain dicts for pages, JSON and the terminal.

Every function here is synchronous (the web handler runs them in a thread) and read-only. The
queries are written for a live table of a million jobs:

* counts over the whole live table (jobs by queue and status) take a covering-index scan that
  costs ~0.2 s at 1M rows, so they are cached per process for a few seconds and refreshed in the
  background while the previous answer is served (a shifter's page never waits on a refresh);
* the status-change chart reads ``job_status_log`` by primary-key range (the window start is
  found by bisection on ``id``, which grows with time), and closed time buckets never change, so
  they are counted once per process and kept;
* job lists page by PandaID (keyset paging): first among the newest rows (a short primary-key
  scan that finds common matches at once), then through the indexes for rare matches.
"""
