"""Storage: the append-only JSON-lines event log (the source of truth)."""
