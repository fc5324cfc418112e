"""Wiring of the subscriptions adapter (filled in by its issue). See refloop/wiring/__init__.py."""
