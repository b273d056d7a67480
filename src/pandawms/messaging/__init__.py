"""Publishing job state changes to a message broker (STOMP: ActiveMQ, RabbitMQ's STOMP plugin)."""
