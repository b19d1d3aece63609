"""Shipped configs (``configs/`` in a checkout), installed as ``polysteer.configs``."""
