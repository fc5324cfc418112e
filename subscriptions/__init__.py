"""Detect referrals on FHIR servers: Subscription registration, the notification endpoint,
processing and reconciliation polling (docs/subscriptions.md)."""
