"""Broker mode: jobs stay in the store, and their ids travel through a broker (RabbitMQ) so that
consumers on many machines start them with low latency.

The store is the source of truth (spec.md#broker). A message is a small envelope naming a stored
job (``spec/schemas/envelope.schema.json``); a consumer treats it as a wake-up for its queue and
priority and claims through the store, exactly as a polling worker does. A publish that fails
leaves the job ``broker_failed``; the repair loop (``conveyor process`` in broker mode) hands it
over again, together with every due job whose message may be missing.

Nothing here imports ``pika`` until a broker is used, so the library works without it.
"""

from .base import Broker, Failed
from .control import InvalidControl
from .envelope import Envelope, InvalidEnvelope
from .settings import RELOAD_EXIT_CODE, BrokerSettings
from .topology import Bands, Topology

__all__ = [
    "RELOAD_EXIT_CODE",
    "Bands",
    "Broker",
    "BrokerSettings",
    "Envelope",
    "Failed",
    "InvalidControl",
    "InvalidEnvelope",
    "Topology",
]
