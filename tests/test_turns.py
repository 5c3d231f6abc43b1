"""Turns at the event log: in arrival order, and a waiter that steps away keeps its place."""

from __future__ import annotations

import time

from stigmer_core.pipeline.turns import Place, Turns


def test_a_waiter_that_steps_away_to_send_a_bookmark_keeps_its_place_in_line() -> None:
    turns = Turns(1)
    first, second, third = Place(), Place(), Place()
    assert turns.take(first, lambda: True)
    passed = time.monotonic()  # a bookmark already due: each waiter steps away at once
    assert not turns.take(second, lambda: True, until=passed)
    assert not turns.take(third, lambda: True, until=passed)
    assert not turns.take(second, lambda: True, until=passed), "back again: still behind the holder"
    assert turns.waiting == 2, "neither went to the back of the line, nor left it"
    turns.give(first)
    assert not turns.take(third, lambda: True, until=passed), "the second came first"
    assert turns.take(second, lambda: True, until=passed), "called while away: its turn waited for it"
    turns.give(second)
    assert turns.take(third, lambda: True, until=passed)
    assert turns.waiting == 0


def test_a_waiter_whose_caller_went_away_leaves_the_line_and_passes_on_a_turn_called_meanwhile() -> None:
    turns = Turns(1)
    holder, gone, next_one = Place(), Place(), Place()
    assert turns.take(holder, lambda: True)
    assert not turns.take(gone, lambda: False, check_every=0)
    assert turns.waiting == 0, "a caller gone: out of line"
    passed = time.monotonic()
    assert not turns.take(gone, lambda: True, until=passed)
    assert not turns.take(next_one, lambda: True, until=passed)
    turns.give(holder)  # called: ``gone``, which then ends without reading
    turns.leave(gone)
    assert turns.take(next_one, lambda: True, until=passed), "the turn went on to the next in line"
    turns.leave(Place())  # never in line: nothing to do
    turns.give(next_one)
    assert turns.take(Place(), lambda: True, until=passed), "every turn came back"
