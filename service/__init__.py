"""sessionizer: final session and rolling-window aggregates over Kafka topics."""

__version__ = "0.1.0"
