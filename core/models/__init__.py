"""Loading models by name or config, and the tiny built-in reference model."""
