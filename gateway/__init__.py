"""The edge: routing, token checks, errors, request ids."""
