"""The fault schedule gives every victim the same share, so even a short run meets each one."""

from __future__ import annotations

import random
from collections import Counter

from chaos.faults import Victim, schedule


def test_one_round_meets_every_victim_once() -> None:
    assert sorted(schedule(len(Victim), random.Random(1))) == sorted(Victim)


def test_fifty_cycles_give_each_victim_ten() -> None:
    assert Counter(schedule(50, random.Random(7))) == dict.fromkeys(Victim, 10)


def test_the_seed_fixes_the_order() -> None:
    assert schedule(12, random.Random(3)) == schedule(12, random.Random(3))
