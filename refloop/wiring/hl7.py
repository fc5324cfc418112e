"""Wiring of the hl7 adapter (filled in by its issue). See refloop/wiring/__init__.py."""
