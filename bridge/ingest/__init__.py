"""Accepting events: storing what a source sent and queueing its translation, in one transaction."""
