"""What changes a host: facts (read-only commands + pure parsers), pure planners that turn wanted
and current state into a :class:`~tproxy_nb.steps.plan.Plan`, and the code that applies plans,
runs the Envoys, loads the firewall under its rollback guard and makes the four requests.

May import ``remote``, ``render``, ``analysis`` and the base modules; never ``present``, ``lab``
or the CLI.
"""
