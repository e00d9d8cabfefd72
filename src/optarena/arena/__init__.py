"""The arena: fair optimizer comparisons (tasks, protocol, store, report, CLI)."""
