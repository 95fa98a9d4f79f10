"""The faults the harness injects, and the order it injects them in.

Every victim gets the same share of the cycles: the schedule is made of rounds, each round
every victim once in a shuffled order, so a short run (one round: 5 cycles) still meets each.
"""

from __future__ import annotations

import random
from enum import StrEnum


class Victim(StrEnum):
    """What one fault cycle hits."""

    CDC = "cdc-service"  # SIGKILL cdc-service, then start it again
    WRITER = "bronze-writer"  # SIGKILL bronze-writer, then start it again
    BOTH = "both"  # SIGKILL both services at once, then start them again
    BROKER = "broker-kill"  # SIGKILL the Kafka broker, then restart it on the same storage and port
    PAUSE = "broker-pause"  # SIGSTOP the broker past the producer's delivery timeout, then SIGCONT

    @property
    def services(self) -> tuple[str, ...]:
        """The console scripts this fault kills."""
        if self is Victim.CDC:
            return ("cdc-service",)
        if self is Victim.WRITER:
            return ("bronze-writer",)
        if self is Victim.BOTH:
            return ("cdc-service", "bronze-writer")
        return ()


def schedule(cycles: int, rng: random.Random) -> list[Victim]:
    """``cycles`` victims: shuffled rounds of every victim, cut at ``cycles``."""
    victims: list[Victim] = []
    while len(victims) < cycles:
        round_ = list(Victim)
        rng.shuffle(round_)
        victims.extend(round_)
    return victims[:cycles]


__all__ = ["Victim", "schedule"]
