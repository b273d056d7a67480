"""What the server does, independent of HTTP: submit, dispatch, heartbeat, kill and reads.

Functions here take and return plain Python values (dicts keyed by PanDA attribute names);
the wire formats live in :mod:`pandawms.api`.
"""
