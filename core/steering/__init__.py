"""The steering runtime: the adapter protocol, step clock, layouts, site tables, generation
records, interventions, schedules, styles and the ``steer()`` context."""
