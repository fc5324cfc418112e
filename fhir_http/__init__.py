"""One FHIR HTTP client for every adapter: timeouts, a bounded retry, a token refreshed once on
401, peer failures as PeerError, URLs logged without their query. The adapters' `client.py`
modules are thin layers over it (their searches, conditional creates and token forms); it
imports `requests` and, from the project, only `referrals.errors` (docs/architecture.md)."""
