"""Seeing what is happening: the web monitor, its JSON, Prometheus metrics and the terminal view."""
