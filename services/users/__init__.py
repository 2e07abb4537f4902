"""Profiles and admin user management."""
