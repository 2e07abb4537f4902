"""Lyceum services; each owns its database."""
