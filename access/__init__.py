"""Access to Refloop's APIs: the OAuth 2.0 authorization server for system clients (SMART Backend
Services), tokens from external authorization servers (JWKS or RFC 7662 introspection), SMART v2
scopes, and the guard that protects routes with them."""
