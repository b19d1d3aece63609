"""The voice plugin."""
