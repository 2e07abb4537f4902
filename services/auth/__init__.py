"""Credentials, tokens, JWKS, logout and revocation."""
