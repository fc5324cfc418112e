"""Channels: one small interface (base.Channel) per way of reaching a patient."""
