"""Credentials, tokens, JWKS, logout and revocation, and the mail that verifies an address
or recovers a password."""
