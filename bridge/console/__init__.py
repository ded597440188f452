"""The hand-off console (the console engineer's package; this stand-in only makes it one)."""
