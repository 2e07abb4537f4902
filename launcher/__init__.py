"""Starts the whole platform: embedded in one process, or as one process per service."""
