"""The confidence validator on made-up confidence sequences: where it fires, the window math,
min_tokens, soft scores, and that its verdict does not depend on how the tokens were cut into
checkpoints (in flight and after the fact then agree)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from validators.base import Checkpoint, ProblemContext, Step
from validators.builtin.confidence import Confidence, ConfidenceParams
from validators.checkpoints import CheckpointSplitter
from validators.registry import available, build

CTX = ProblemContext(problem="What is 2 + 2?")


def session(**params: float) -> tuple[Confidence, object]:
    v = Confidence(ConfidenceParams(**params))  # type: ignore[arg-type]
    return v, v.open(CTX)


def fire_token(confidences: list[float], chunk: int, **params: float) -> int | None:
    """The token count at which it fired (the checkpoint's last token), feeding `chunk`
    confidences per checkpoint; None when it never did."""
    v = Confidence(ConfidenceParams(**params))  # type: ignore[arg-type]
    s = v.open(CTX)
    for start in range(0, len(confidences), chunk):
        part = tuple(confidences[start:start + chunk])
        verdict = s.feed(Checkpoint(index=start, steps=(), confidences=part))
        if not verdict.ok:
            assert verdict.reason == "low_confidence"
            return int(verdict.detail.split("(token ")[1].split(")")[0])
    return None


def test_registered_not_default_and_asks_for_logprobs() -> None:
    assert "confidence" in available()
    v = build("confidence", {"top_k": 7})
    assert v.top_logprobs() == 7
    assert build("arithmetic", {}).top_logprobs() is None
    from validators.defaults import DEFAULT_SOLVE_VALIDATORS
    assert "confidence" not in {name for name, _, _ in DEFAULT_SOLVE_VALIDATORS}


def test_fires_at_the_token_where_the_window_mean_drops() -> None:
    # window 4, threshold 2: confident tokens (5), then unsure ones (0). The mean of the last 4
    # is (5+5+5+0)/4 = 3.75, (5+5+0+0)/4 = 2.5, (5+0+0+0)/4 = 1.25 < 2 at the 3rd unsure token.
    seq = [5.0] * 10 + [0.0] * 10
    assert fire_token(seq, 1, window=4, min_group_confidence=2.0, min_tokens=1) == 13


def test_not_before_min_tokens() -> None:
    seq = [0.1] * 30
    assert fire_token(seq, 1, window=4, min_group_confidence=1.0, min_tokens=20) == 20
    assert fire_token(seq, 1, window=4, min_group_confidence=1.0, min_tokens=31) is None


def test_partial_window_is_the_mean_of_what_was_seen() -> None:
    # Before the window fills, the group is the tokens so far: (3 + 0) / 2 = 1.5 < 2.
    assert fire_token([3.0, 0.0, 9.0], 1, window=64, min_group_confidence=2.0,
                      min_tokens=1) == 2
    assert fire_token([3.0, 3.0, 0.0], 1, window=64, min_group_confidence=2.0,
                      min_tokens=1) is None


def test_a_short_dip_in_a_long_window_does_not_fire() -> None:
    seq = [4.0] * 64 + [0.0] * 8 + [4.0] * 64  # a dip of 8 in a window of 64: mean 3.5
    assert fire_token(seq, 16, window=64, min_group_confidence=3.0, min_tokens=64) is None
    # Window 8: 5 x 4.0 + 3 x 0.0 = 2.5 < 3 at the third unsure token.
    assert fire_token(seq, 16, window=8, min_group_confidence=3.0, min_tokens=64) == 67


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1000])
def test_same_token_however_the_stream_was_cut(chunk: int) -> None:
    seq = [3.0 - 0.01 * i for i in range(300)]
    assert fire_token(seq, chunk, window=32, min_group_confidence=1.0, min_tokens=64) == \
        fire_token(seq, 1, window=32, min_group_confidence=1.0, min_tokens=64)


def test_soft_score_says_how_far_below() -> None:
    _, s = session(window=2, min_group_confidence=2.0, min_tokens=1)
    v = s.feed(Checkpoint(index=0, steps=(Step(0, "x"),), confidences=(1.0, 0.0)))  # type: ignore[attr-defined]
    assert v.reason == "low_confidence" and v.score == pytest.approx(0.5)  # 1.0 / 2.0
    assert v.step_index == 0
    assert s.feed(Checkpoint(index=1, steps=(), confidences=(0.0,))).ok  # type: ignore[attr-defined]


def test_without_confidences_it_never_fires() -> None:
    _, s = session(min_group_confidence=100.0, min_tokens=1)
    for i in range(10):
        assert s.feed(Checkpoint(index=i, steps=(Step(i, "text"),), tokens_so_far=i)).ok  # type: ignore[attr-defined]


def test_ring_stays_bounded() -> None:
    _, s = session(window=16, min_group_confidence=0.5, min_tokens=1)
    s.feed(Checkpoint(index=0, steps=(), confidences=(5.0,) * 100_000))  # type: ignore[attr-defined]
    assert len(s.ring) == 16 and s.total == pytest.approx(80.0)  # type: ignore[attr-defined]


def test_bad_params_are_refused() -> None:
    with pytest.raises(ValidationError):
        ConfidenceParams(min_group_confidence=0)
    with pytest.raises(ValidationError):
        ConfidenceParams(window=0)
    with pytest.raises(ValidationError):
        ConfidenceParams(bogus=1)  # type: ignore[call-arg]


def test_splitter_hands_each_checkpoint_the_confidences_since_the_last() -> None:
    sp = CheckpointSplitter(separator="\n")
    assert sp.push("a", 1, (1.0,)) == []
    cps = sp.push(" b\nc", 2, (2.0, 3.0))
    assert [cp.confidences for cp in cps] == [(1.0, 2.0, 3.0)]
    final = sp.close()
    assert final.confidences == ()
    sp2 = CheckpointSplitter(separator="\n")
    sp2.push("x\n", 1, (4.0,))
    sp2.push("y", 1, (5.0,))
    assert sp2.close().confidences == (5.0,)
