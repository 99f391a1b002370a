"""loopguard adapter (see docs)."""
