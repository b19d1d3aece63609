"""The image plugin."""
