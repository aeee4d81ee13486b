"""calibtune.objectives.rcft: targets, bins, a hand-worked loss, edge cases, gradients, E-step, registry."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from calibtune.objectives import (
    OBJECTIVES,
    PRESETS,
    RCFTConfig,
    e_step,
    get_objective,
    rcft_code,
)
from calibtune.objectives.rcft import bin_index, rank_preserving_targets

NEG_INF = -math.inf


def table(**bins: tuple[float, int]) -> dict[str, torch.Tensor]:
    """Bin state with ``b<k>=(acc, count)`` set and every other bin empty (acc 0, count 0)."""
    acc, count = torch.zeros(10), torch.zeros(10)
    for key, (a, n) in bins.items():
        acc[int(key[1:])], count[int(key[1:])] = a, n
    return {"bin_accuracy": acc, "bin_count": count}


def full_table(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Every bin populated: acc_b = 0.05 + 0.1 b, N_b = b + 1."""
    return {"bin_accuracy": 0.05 + 0.1 * torch.arange(10, dtype=dtype), "bin_count": torch.arange(1, 11, dtype=dtype)}


def log_p(*rows: list[float]) -> torch.Tensor:
    """Scores whose softmax is the given probabilities (0 -> a -inf padded column)."""
    return torch.log(torch.tensor(rows, dtype=torch.float64)).float()


# ---------------------------------------------------------------- targets and bins

def test_targets_sum_to_one_minus_acc_and_keep_order():
    g = torch.Generator().manual_seed(0)
    ks = [2, 3, 4, 6, 6, 5, 3, 4]
    scores = torch.full((len(ks), 6), NEG_INF, dtype=torch.float64)
    for i, k in enumerate(ks):
        scores[i, :k] = 2 * torch.randn(k, generator=g, dtype=torch.float64)
    p = torch.softmax(scores, dim=-1)
    others = (scores != NEG_INF) & (torch.arange(6) != p.argmax(dim=-1, keepdim=True))
    acc = torch.rand(len(ks), generator=g, dtype=torch.float64) * 0.99
    t = rank_preserving_targets(p, others, acc)
    torch.testing.assert_close(t.sum(dim=-1), 1 - acc)
    assert (t[~others] == 0).all()
    for i in range(len(ks)):
        pi, ti = p[i, others[i]], t[i, others[i]]
        assert torch.equal(pi.argsort(), ti.argsort())  # same ranks
        assert (ti > 0).all()
    # acc = 1: every non-max target is 0; one non-max (K = 2): it gets all of 1 - acc
    assert (rank_preserving_targets(p, others, torch.ones(len(ks), dtype=torch.float64)) == 0).all()
    torch.testing.assert_close(t[0, others[0]], 1 - acc[:1])


def test_targets_equal_split_when_second_probability_is_zero():
    probs = torch.tensor([[0.0, 0.0, 0.0]], requires_grad=True)
    t = rank_preserving_targets(probs, torch.ones(1, 3, dtype=torch.bool), torch.tensor([0.4]))
    torch.testing.assert_close(t, torch.full((1, 3), 0.2))
    t.sum().backward()
    assert torch.isfinite(probs.grad).all()


def test_bin_index_and_e_step_share_the_rule():
    # [k/10, (k+1)/10), top bin [0.9, 1] closed
    c = [0.0, 0.0999, 0.1, 0.3, 0.55, 0.8999, 0.9, 0.95, 1.0]
    bins = [0, 0, 1, 3, 5, 8, 9, 9, 9]
    assert bin_index(torch.tensor(c, dtype=torch.float64), 10).tolist() == bins
    assert bin_index(torch.tensor([0.9]), 10).tolist() == [8]  # float32 0.9 is 0.8999999762 (binned in float64)
    # correct:  T  F  T  F  T  F  T  T  F -> bin 0: 1/2, 1: 1/1, 3: 0/1, 5: 1/1, 8: 0/1, 9: 2/3
    acc, count = e_step(np.array(c), np.array([1, 0, 1, 0, 1, 0, 1, 1, 0], dtype=bool))
    assert count.tolist() == [2, 1, 0, 1, 0, 1, 0, 0, 1, 3] and count.dtype == np.int64
    np.testing.assert_allclose(acc, [0.5, 1, 0, 0, 0, 1, 0, 0, 0, 2 / 3])
    acc, count = e_step([0.2, 0.25, 0.7], [0, 1, 1], n_bins=2)  # bins [0, .5), [.5, 1]
    assert count.tolist() == [2, 1] and acc.tolist() == [0.5, 1.0]


@pytest.mark.parametrize(("confidence", "correct", "match"), [
    ([0.5, 1.2], [1, 0], r"\[0, 1\]"),
    ([0.5, math.nan], [1, 0], r"\[0, 1\]"),
    ([0.5], [1, 0], "same shape"),
    ([0.5], [2], "booleans"),
])
def test_e_step_errors(confidence, correct, match):
    with pytest.raises(ValueError, match=match):
        e_step(np.array(confidence), np.array(correct))


# ---------------------------------------------------------------- the loss by hand

def test_hand_worked_three_items():
    # bins: acc_4 = 0, N_4 = 4; acc_7 = 0.5, N_7 = 5; acc_9 = 0.7, N_9 = 8
    state = table(b4=(0.0, 4), b7=(0.5, 5), b9=(0.7, 8))
    scores = log_p([0.46, 0.27, 0.135, 0.135], [0.7, 0.2, 0.1, 0.0], [0.94, 0.02, 0.02, 0.02])
    labels = torch.tensor([0, 1, 0])
    # item 1 (K=4, c=.46, bin 4): gamma = log 3 / (.27 * 1); gamma*p = log 3, log3/2, log3/2
    #   tanh = (9-1)/(9+1) = .8, (3-1)/(3+1) = .5, .5; T = 1.8; a = 1/(1.8+3) = 1/4.8
    #   targets = 1.8/4.8 = .375, 1.5/4.8 = .3125, .3125 (sum 1 = 1 - acc)
    #   e = [.46^2 + (.27-.375)^2 + 2 (.135-.3125)^2] / 4 = [.2116 + .011025 + .0630125] / 4 = .071409375
    # item 2 (K=3, padded, c=.7, bin 7): gamma = log 2 / (.2 * .5) = 10 log 2; gamma*p = 2 log 2, log 2
    #   tanh = (16-1)/(16+1) = 15/17, (4-1)/(4+1) = 3/5; T = 126/85; a = .5/(126/85 + 2) = 85/592
    #   targets = a (1 + 15/17) = 10/37, a (1 + 3/5) = 17/74 (sum .5)
    #   e = [(.7-.5)^2 + (.2-10/37)^2 + (.1-17/74)^2] / 5 = [.04 + .0049379 + .0168298] / 5 = .0123535
    # item 3 (K=4, c=.94, top bin 9): equal non-max -> equal targets (1-.7)/3 = .1
    #   e = [(.94-.7)^2 + 3 (.02-.1)^2] / 8 = [.0576 + .0192] / 8 = .0096
    e = [0.071409375, (0.04 + (0.2 - 10 / 37) ** 2 + (0.1 - 17 / 74) ** 2) / 5, 0.0096]
    assert e[1] == pytest.approx(0.0123535, abs=1e-7)
    torch.testing.assert_close(get_objective("rcft", sft_weight=0.0)(scores, labels, **state), torch.tensor(e))
    # paper preset: CE + e, CE = -log p_y = -log .46, -log .2, -log .94
    ce = [-math.log(0.46), -math.log(0.2), -math.log(0.94)]
    out = get_objective("rcft")(scores, labels, **state)
    torch.testing.assert_close(out, torch.tensor([c + x for c, x in zip(ce, e)]))
    assert out.dtype == torch.float32
    # code preset (alpha = .5): .5 CE + 5e-4 e, item 3 (top bin) skipped; detaching does not change values
    torch.testing.assert_close(get_objective("rcft-code")(scores, labels, **state),
                               torch.tensor([0.5 * ce[0] + 5e-4 * e[0], 0.5 * ce[1] + 5e-4 * e[1], 0.5 * ce[2]]))
    # ragged: item 2 without its padding column gives the same loss
    torch.testing.assert_close(get_objective("rcft")(scores[1:2, :3], labels[1:2], **state), out[1:2])


def test_top_bin_included_unless_disabled():
    # c = .95 and c = 1 (a single-option item) fall in the closed top bin [.9, 1]; c = .85 in bin 8
    state = table(b8=(0.5, 2), b9=(0.8, 4))
    scores = log_p([0.95, 0.05, 0.0], [0.85, 0.1, 0.05], [1.0, 0.0, 0.0])
    labels = torch.tensor([0, 0, 0])
    on = get_objective("rcft", sft_weight=0.0)(scores, labels, **state)
    off = get_objective("rcft", sft_weight=0.0, include_top_bin=False)(scores, labels, **state)
    # K=2: target (1 - .8) = .2: e = [(.95-.8)^2 + (.05-.2)^2]/4 = .01125; K=1: e = (1-.8)^2/4 = .01
    torch.testing.assert_close(on[[0, 2]], torch.tensor([0.01125, 0.01]))
    assert off[0] == 0 and off[2] == 0
    assert on[1] > 0 and on[1] == off[1]


def test_two_options():
    # p = [.75, .25], acc_7 = .6, N_7 = 3: the one other option's target is 1 - .6 = .4 (gamma = log 1 = 0)
    # e = [(.75-.6)^2 + (.25-.4)^2] / 3 = .045 / 3 = .015
    scores = log_p([0.75, 0.25]).requires_grad_(True)
    out = get_objective("rcft", sft_weight=0.0, detach_targets=False)(scores, torch.tensor([1]),
                                                                      **table(b7=(0.6, 3)))
    torch.testing.assert_close(out, torch.tensor([0.015]))
    out.sum().backward()
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0


@pytest.mark.parametrize("detach", [True, False])
def test_accuracy_one(detach):
    # acc_5 = 1: all non-max targets 0; e = [.45^2 + .25^2 + .15^2 + .05^2] / 2 = .29 / 2 = .145
    scores = log_p([0.55, 0.25, 0.15, 0.05]).requires_grad_(True)
    out = get_objective("rcft", sft_weight=0.0, detach_targets=detach)(scores, torch.tensor([0]),
                                                                       **table(b5=(1.0, 2)))
    torch.testing.assert_close(out, torch.tensor([0.145]))
    out.sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_empty_bin_second_probability_zero_and_single_option():
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.0, -1000.0, -1000.0], [1.0, NEG_INF, NEG_INF]], requires_grad=True)
    labels = torch.tensor([1, 0, 0])
    ce = get_objective("ce")(scores, labels)
    # row 0 falls in bin 8 (c = .84), whose E-step count is 0: only the CE is left
    out = get_objective("rcft")(scores, labels, **table(b9=(0.5, 2)))
    torch.testing.assert_close(out[0], ce[0])
    # row 1: p = [1, 0, 0] even in float64 (p_(2) = 0 -> equal split .25, .25); row 2: K = 1, c = 1
    # e = [(1-.5)^2 + 2 * .25^2] / 2 = .1875; e = (1-.5)^2 / 2 = .125
    torch.testing.assert_close(out[1:], ce[1:] + torch.tensor([0.1875, 0.125]))
    out.sum().backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[2, 1:] == 0).all()


# ---------------------------------------------------------------- gradients

def test_gradient_reaches_scores_and_linear_weights():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4)
    x = torch.randn(8, 6)
    scores = layer(x).masked_fill(torch.tensor([False, False, False, True]) & (torch.arange(8) % 2 == 0)[:, None],
                                  NEG_INF)
    scores.retain_grad()
    labels = torch.randint(0, 3, (8,))
    get_objective("rcft", sft_weight=0.0)(scores, labels, **full_table()).sum().backward()
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0
    assert (scores.grad[::2, 3] == 0).all()
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


def gradcheck_scores() -> torch.Tensor:
    """Three items (K = 4, 3, 4) with confidences .582, .768, .359: at least .01 from every bin edge."""
    scores = torch.tensor([[1.2, 0.3, -0.4, -1.0], [2.0, 0.4, -0.3, NEG_INF], [0.5, 0.2, -0.2, -0.1]],
                          dtype=torch.float64)
    c = torch.softmax(scores, dim=-1).amax(dim=-1)
    assert ((c * 10 - (c * 10).round()).abs() > 0.1).all()
    return scores


def test_gradcheck_without_detach():
    scores = gradcheck_scores().requires_grad_(True)
    objective = get_objective("rcft", detach_targets=False)
    assert torch.autograd.gradcheck(lambda s: objective(s, torch.tensor([0, 2, 1]), **full_table(torch.float64)),
                                    (scores,))


def test_gradcheck_detached_targets():
    # with detached targets the loss differentiates e_i with the non-max targets frozen at the current scores
    s0 = gradcheck_scores()
    labels = torch.tensor([0, 2, 1])
    state = full_table(torch.float64)
    acc, count = state["bin_accuracy"][[5, 7, 3]], state["bin_count"][[5, 7, 3]]
    p0 = torch.softmax(s0, dim=-1)
    others = (s0 != NEG_INF) & (torch.arange(4) != p0.argmax(dim=-1, keepdim=True))
    frozen_targets = rank_preserving_targets(p0, others, acc)

    def frozen(s: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(s, dim=-1)
        squared = (p.amax(dim=-1) - acc) ** 2 + ((p - frozen_targets) ** 2).masked_fill(~others, 0).sum(dim=-1)
        return -torch.log_softmax(s, dim=-1).gather(1, labels[:, None]).squeeze(1) + squared / count

    assert torch.autograd.gradcheck(frozen, (s0.clone().requires_grad_(True),))
    grads = {}
    for detach in (True, False):
        s = s0.clone().requires_grad_(True)
        out = get_objective("rcft", detach_targets=detach)(s, labels, **state)
        torch.testing.assert_close(out, frozen(s0))
        out.sum().backward()
        grads[detach] = s.grad
    s = s0.clone().requires_grad_(True)
    frozen(s).sum().backward()
    torch.testing.assert_close(grads[True], s.grad)
    assert not torch.allclose(grads[True], grads[False])


# ---------------------------------------------------------------- registry and state

def test_registry_and_presets():
    assert OBJECTIVES["rcft"] is RCFTConfig and PRESETS["rcft-code"] is rcft_code
    assert RCFTConfig.state_keys == ("bin_accuracy", "bin_count") and not RCFTConfig.needs_known
    assert OBJECTIVES["cogcalib"].state_keys == ("known",) and OBJECTIVES["ce"].state_keys == ()
    assert get_objective("rcft").params() == {"sft_weight": 1.0, "ece_weight": 1.0, "n_bins": 10,
                                              "include_top_bin": True, "detach_targets": True}
    assert get_objective("rcft-code") == RCFTConfig(sft_weight=0.5, ece_weight=5e-4, include_top_bin=False,
                                                    detach_targets=False)
    assert get_objective("rcft-code", alpha=1.0, n_bins=5) == RCFTConfig(
        sft_weight=0.0, ece_weight=1e-3, n_bins=5, include_top_bin=False, detach_targets=False)
    assert get_objective("rcft-code", alpha=0.0).ece_weight == 0.0
    # config fields are exactly the loss function's hyper-parameters, with the same defaults
    signature = inspect.signature(RCFTConfig.loss_fn)
    hyper = {p.name: p.default for p in signature.parameters.values()
             if p.kind is p.KEYWORD_ONLY and p.name not in RCFTConfig.state_keys}
    assert hyper == get_objective("rcft").params()


@pytest.mark.parametrize(("name", "params", "match"), [
    ("nope", {}, r"'rcft', 'rcft-code'"),
    ("rcft-code", {"sft_weight": 1.0}, r"valid parameters: \['alpha', 'n_bins'\]"),
    ("rcft-code", {"alpha": 1.5}, "alpha"),
    ("rcft", {"ece_weight": -1.0}, "ece_weight"),
    ("rcft", {"n_bins": 0}, "n_bins"),
    ("rcft", {"n_bins": 10.0}, "n_bins"),
    ("rcft", {"detach_targets": 1}, "bool"),
])
def test_registry_errors(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_objective(name, **params)


def test_state_errors():
    scores, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    objective = get_objective("rcft")
    state = full_table()
    with pytest.raises(ValueError, match="Expected state"):
        objective(scores, labels)
    with pytest.raises(ValueError, match="Expected state"):
        objective(scores, labels, known=torch.tensor([True]), **state)
    with pytest.raises(ValueError, match=r"`bin_count`.*shape \(5,\)"):
        get_objective("rcft", n_bins=5)(scores, labels, bin_accuracy=torch.zeros(5), bin_count=torch.zeros(10))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        objective(scores, labels, bin_accuracy=torch.full((10,), 1.5), bin_count=state["bin_count"])
    with pytest.raises(ValueError, match=">= 0"):
        objective(scores, labels, bin_accuracy=state["bin_accuracy"], bin_count=-state["bin_count"])
