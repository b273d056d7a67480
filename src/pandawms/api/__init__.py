"""HTTP: the v1 JSON API, the legacy pilot API and the app that routes to them.

Each wire format is converted to the core's plain values in its own module; the core never
sees a request.
"""
