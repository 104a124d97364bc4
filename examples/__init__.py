"""Examples of user code the config can name (see docs/rules.md, custom aggregates)."""
