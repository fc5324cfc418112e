"""Closing the loop: chasing consult notes after the visit, keeping referring providers informed,
delivering the note to them and recording its receipt, and the program clocks (docs/loop.md)."""
