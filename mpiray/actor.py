"""Ray's ``ray.actor`` names: the handle and class types, and ``exit_actor``."""

from __future__ import annotations

from ._actor import ActorClass, ActorHandle, ActorMethod

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor"]


def exit_actor() -> None:
    """End the actor that runs this call, on purpose: this call and every later one raise
    ``ActorDiedError`` (no restart), and its resources are freed."""
    from . import _api

    rt = _api._runtime
    if rt is None or rt.is_driver or getattr(rt, "actor_id", None) is None:
        raise TypeError("exit_actor() is to be called from a method of an actor")
    raise SystemExit(0)
