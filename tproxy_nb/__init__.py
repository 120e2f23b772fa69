"""tproxy-notebooks: reproduce and explain an Envoy transparent-proxy egress setup."""

__version__ = "0.1.0"
