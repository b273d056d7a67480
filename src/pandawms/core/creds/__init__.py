"""Credentials the server hands out: proxies, key pairs and token keys from the operators' directory,
access tokens from the token issuer, and users' secrets (encrypted at rest)."""
