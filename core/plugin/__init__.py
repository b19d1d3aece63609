"""Plugin machinery: registries and the plugin manager (hook specs live in ``polysteer.hookspecs``)."""
