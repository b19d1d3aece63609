"""Test support for polysteer and its plugins.

* :mod:`polysteer.testing.fixtures` is a pytest plugin (auto-loaded when polysteer is installed)
  with fixtures ``plugin_manager`` (a fresh manager, used as the current one) and
  ``register_plugin`` (register a throwaway plugin, undone after the test).
* :class:`AdapterConformance` is the adapter conformance suite: subclass it in a test module,
  implement ``make_adapter`` and ``make_inputs``, and every contract is checked.
"""

from polysteer.testing.conformance import AdapterConformance, count_hooks, probe_style

__all__ = ["AdapterConformance", "count_hooks", "probe_style"]
