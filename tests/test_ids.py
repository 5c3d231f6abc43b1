"""Resource ids: ULIDs that sort in the order they were made, and that no caller can guess."""

from __future__ import annotations

import itertools
import os
import random
import time

import pytest

from stigmer_core import ids
from stigmer_core.ids import is_valid_id, new_id


def _value(object_id: str) -> int:
    ulid = object_id.rpartition("-")[2]
    value = 0
    for char in ulid:
        value = value * 32 + ids._ULID_CHARS.index(char)
    return value


def test_ids_made_together_increase_by_unpredictable_steps() -> None:
    made = [ids.new_id("agt") for _ in range(2000)]
    values = [_value(i) for i in made]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert made == sorted(made), "the text sorts as the number does"
    same_ms = [b - a for a, b in itertools.pairwise(values) if a >> 80 == b >> 80]
    assert same_ms, "2,000 ids in a row share milliseconds"
    assert all(step > 1 for step in same_ms), "one more than the last would name another org's next object"
    assert len(set(same_ms)) > len(same_ms) // 2
    assert all(ids.is_valid_id(i, "agt") for i in made)


@pytest.mark.parametrize("prefix", ["acme-gzm", "2fa", "a" * 20, "wfl"])
def test_an_id_of_any_prefix_the_registry_accepts_is_valid(prefix: str) -> None:
    """An id prefix with a dash, a digit first or more than 16 characters is accepted at startup:
    its ids were then refused wherever an id is checked (a reference, an import's given id)."""
    made = new_id(prefix)
    assert is_valid_id(made, prefix)
    assert not is_valid_id(made, prefix + "x")
    assert not is_valid_id(made[:-1], prefix)
    assert not is_valid_id(f"{prefix}-{'8' + made[-25:]}", prefix)  # past the 128 bits a ULID holds


def test_an_id_is_told_from_a_slug_with_or_without_its_kind() -> None:
    for prefix in ("acme-gzm", "agt", "2fa"):
        made = new_id(prefix)
        assert ids.looks_like_id(made) and ids.looks_like_id(made, prefix)
        assert not ids.looks_like_id(made, "other")
    assert not ids.looks_like_id("support-bot")
    assert not ids.looks_like_id("-" + new_id("agt")[-26:])  # no prefix before the dash


def test_a_slug_made_from_free_text_never_has_an_ids_shape() -> None:
    made = new_id("agt")
    assert ids.unlike_id(made) == "agt" + made[4:] and not ids.looks_like_id(ids.unlike_id(made))
    assert ids.unlike_id("a-b-" + made[4:]) == "a-b" + made[4:]
    assert not ids.looks_like_id(ids.unlike_id("a-b-" + made[4:]))
    assert ids.unlike_id("support-bot") == "support-bot"


def test_the_spelled_out_encoding_is_the_base32_one() -> None:
    edges = [0, 1, (1 << 128) - 1, 1 << 127, (1 << 80) - 1, 0x3FF << 118]
    rng = random.Random(7)
    for value in edges + [rng.getrandbits(128) for _ in range(2000)]:
        assert ids._ulid_text(value) == ids._base32(value, ids._ULID_SHIFTS)
    assert _value(new_id("agt")) >> 80 <= time.time_ns() // 1_000_000


def test_a_forked_process_never_repeats_its_parents_random_bits() -> None:
    """Random bytes are read in bulk; a child must not go on with the parent's unused ones."""
    new_id("agt")  # the parent holds unused random bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, " ".join(new_id("agt") for _ in range(4)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as got:
        child = got.read().split()
    parent = [new_id("agt") for _ in range(4)]
    tails = {_value(i) & ((1 << 80) - 1) for i in child + parent}
    assert len(child) == 4 and len(tails) == 8
