"""Conformance suite for Conveyor implementations in any language.

The suite drives an implementation through the harness protocol (``protocol/``): it replays the
JSON vectors (``vectors/``) and runs a stateful property-based suite that compares every response
with an independent model of the spec. See ``conveyor-conformance run --help``.
"""

__version__ = "0.1.0"

PROTOCOL_VERSION = 1
