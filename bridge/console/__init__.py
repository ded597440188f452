"""The hand-off console (stand-in until the console package lands)."""
