"""The tie map as a value: invariant and transitions."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tying_env import ties as tm


def test_validate_accepts_and_refuses():
    assert tm.validate([0, 0, 2, 2, 0]) == (0, 0, 2, 2, 0)
    with pytest.raises(ValueError, match="t\\[0\\] == 0"):
        tm.validate([1, 1])
    with pytest.raises(ValueError, match="t\\[1\\] = 2"):
        tm.validate([0, 2, 2])
    with pytest.raises(ValueError, match="points at a tied position"):
        tm.validate([0, 0, 1])


def test_tie_resolves_source_to_root():
    tr = tm.tie([0, 1, 1, 3], 3, 2)
    assert tr.after == (0, 1, 1, 1)
    assert tr.promoted is None and tr.cloned is None


def test_tie_root_with_dependents_promotes_lowest():
    tr = tm.tie([0, 1, 1, 1, 0], 1, 0)
    assert tr.after == (0, 0, 2, 2, 0)
    assert tr.promoted == (1, 2)


def test_untie_records_clone_source():
    tr = tm.untie([0, 0, 0], 2)
    assert tr.after == (0, 0, 2)
    assert tr.cloned == (2, 0)
    assert not tm.untie([0, 1], 1).changed


def test_apply_choice_published_convention():
    assert tm.apply_choice([0, 1, 2, 3], 2, 1).after == (0, 1, 1, 3)
    assert tm.apply_choice([0, 0, 0, 0], 2, 2).after == (0, 0, 2, 0)
    assert tm.apply_choice([0, 0, 0, 0], 2, 3).after == (0, 0, 2, 0)  # >= i: independent
    with pytest.raises(ValueError, match="layer 0 out of range"):
        tm.tie([0, 0], 0, 0)


@given(st.integers(2, 9).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.tuples(st.integers(1, n - 1),
                                                       st.integers(0, n)), max_size=40))))
def test_invariant_after_any_sequence(case):
    n, actions = case
    t = tm.untied(n)
    for layer, choice in actions:
        tr = tm.apply_choice(t, layer, choice)
        t = tr.after
        tm.validate(t)
        # the decided layer ends where the choice says
        if choice >= layer:
            assert t[layer] == layer
        else:
            assert t[layer] == t[choice]
        # nobody else changes the weights they run: roots other than the decided
        # layer keep their dependents, or hand them to the lowest one
        for k in range(n):
            if k != layer and tr.before[k] != tr.before[layer]:
                assert t[k] == tr.before[k]
