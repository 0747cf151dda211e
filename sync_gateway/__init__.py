"""sync-gateway: one blocking HTTP call in front of an asynchronous job API."""

__version__ = "0.1.0"
