"""Wiring of the pas adapter (filled in by its issue). See refloop/wiring/__init__.py."""
