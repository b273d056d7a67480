"""Queues: the catalogue of computing queues, global shares and the brokerage that picks a queue."""
