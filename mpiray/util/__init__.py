"""Helpers on top of the core API, under Ray's names (``ray.util``)."""

from . import scheduling_strategies
from .actor_pool import ActorPool

__all__ = ["ActorPool", "scheduling_strategies"]
