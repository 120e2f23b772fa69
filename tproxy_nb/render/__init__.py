"""Pure renderers: settings in, text out — Envoy YAML from the templates (package data in
``templates/``), iptables-restore text and its parser, certificates.

May import ``errors``, ``marks`` and ``settings``; never ``remote``, ``steps``, ``analysis`` or
``present``, and never pandas: rendering a config must not need a data-frame library.
"""
