"""Pure analysis: Envoy logs, access logs and curl's output in, DataFrames out (parsers,
RBAC verdicts, responses, connections, one request traced across the three Envoys).

May import ``errors``, ``marks``, ``settings`` and ``render`` (the access-log format the
templates render); never ``remote`` or ``steps``: analysis works on text from anywhere.
"""
