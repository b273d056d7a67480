"""Harvester: instances, their workers (linked to jobs), commands and reports."""
