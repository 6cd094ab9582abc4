"""Ray's ``ray.util.scheduling_strategies`` names."""

from .._options import NodeAffinitySchedulingStrategy

__all__ = ["NodeAffinitySchedulingStrategy"]
