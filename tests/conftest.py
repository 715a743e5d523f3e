"""Shared fixtures and the exercise-check helper."""
import pytest

from minirlhf import exercises as ex
from minirlhf import zoo


@pytest.fixture(scope="session")
def sft_and_pairs():
    """The shipped SFT model and preference pairs (do not train the model in place: load your own copy)."""
    return zoo.load("reviews-sft"), zoo.load_pairs("reviews-pairs")


def stub(*args):
    raise NotImplementedError()


def assert_check_behaves(check, rights, wrongs, capsys, reference=None):
    """An exercise check accepts every right answer in `rights` (returning it, with its "correct" line), falls
    back on the package's reference for a stub that raises NotImplementedError (`reference` itself, if given),
    and rejects every (wrong answer, hint regex) with that hint: wrong values, right values of a wrong type,
    right values with a wrong gradient."""
    for right in rights:
        assert check(right) is right
        assert "correct on" in capsys.readouterr().out
    fallback = check(stub)
    assert fallback is not stub and callable(fallback)
    if reference is not None:
        assert fallback is reference
    assert "not implemented yet" in capsys.readouterr().out
    for wrong, hint in wrongs:
        with pytest.raises(ex.ExerciseError, match=hint):
            check(wrong)
