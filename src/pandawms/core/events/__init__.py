"""The event service: event ranges of event-service jobs, handed out a few at a time."""
