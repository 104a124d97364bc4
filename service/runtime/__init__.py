"""The Kafka side: a loop owning consumer and producer, tasks per partition, state restore."""
