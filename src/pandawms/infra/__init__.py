"""Leaf utilities that any layer may use: they import nothing from pandawms."""
