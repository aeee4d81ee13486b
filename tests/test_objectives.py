"""calibtune.objectives: every loss against hand-worked values, ragged options, gradients, registry, Youden's J."""

from __future__ import annotations

import inspect
import math
from dataclasses import fields

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from calibtune.objectives import (
    OBJECTIVES,
    CogCalibConfig,
    Threshold,
    get_objective,
    option_log_probs,
    per_sample_nll,
    youden_threshold,
)
from calibtune.objectives import ce, cogcalib, ecp, focal, label_smoothing, mbls, sft

NEG_INF = -math.inf
LOG3 = math.log(3.0)


def state_for(objective, known: torch.Tensor) -> dict[str, torch.Tensor]:
    """The state an objective declares: ``known`` as given; RCFT's bins all populated (acc .5, count 4)."""
    values = {"known": known, "bin_accuracy": torch.full((10,), 0.5), "bin_count": torch.full((10,), 4.0)}
    return {k: values[k] for k in objective.state_keys}


def call(name: str, scores: torch.Tensor, labels: torch.Tensor, **params) -> torch.Tensor:
    """Run a registered objective, passing ``known`` = all True (and RCFT's bins) when it needs them."""
    objective = get_objective(name, **params)
    state = state_for(objective, torch.ones(len(labels), dtype=torch.bool))
    if objective.needs_logprob_scores:
        scores = torch.log_softmax(scores, dim=-1)
    return objective(scores, labels, **state)


# ---------------------------------------------------------------- hand-worked values

def test_ce_by_hand():
    # z = [log 3, 0, 0] -> p = [3/5, 1/5, 1/5]; CE(y=0) = log(5/3), CE(y=1) = log 5
    scores = torch.tensor([[LOG3, 0.0, 0.0], [LOG3, 0.0, 0.0]])
    out = ce.loss(scores, torch.tensor([0, 1]))
    torch.testing.assert_close(out, torch.tensor([math.log(5 / 3), math.log(5)]))
    torch.testing.assert_close(out, F.cross_entropy(scores, torch.tensor([0, 1]), reduction="none"))


def test_label_smoothing_by_hand_and_against_torch():
    # p = [3/5, 1/5, 1/5], y = 0, ε = 0.05: CE = log(5/3) = 0.510826;
    # U = -(log .6 + 2 log .2)/3 = (0.510826 + 2 * 1.609438)/3 = 1.243234;
    # loss = .95 * 0.510826 + .05 * 1.243234 = 0.547447
    scores = torch.tensor([[LOG3, 0.0, 0.0]])
    out = label_smoothing.loss(scores, torch.tensor([0]), epsilon=0.05)
    expected = 0.95 * math.log(5 / 3) + 0.05 * (math.log(5 / 3) + 2 * math.log(5)) / 3
    assert expected == pytest.approx(0.547447, abs=1e-6)
    torch.testing.assert_close(out, torch.tensor([expected]))

    g = torch.Generator().manual_seed(0)
    scores, labels = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    for eps in (0.0, 0.05, 0.3, 1.0):
        torch.testing.assert_close(label_smoothing.loss(scores, labels, epsilon=eps),
                                   F.cross_entropy(scores, labels, label_smoothing=eps, reduction="none"))


def test_mbls_by_hand():
    # z = [2, 1, 0], y = 0, m = 0.5, λ = 0.1: CE = log(1 + e^-1 + e^-2) = 0.407606;
    # distances to the max [0, 1, 2] -> ReLU(d - .5) = [0, .5, 1.5], mean 2/3; loss = 0.407606 + 0.1 * 2/3 = 0.474273
    scores = torch.tensor([[2.0, 1.0, 0.0]])
    out = mbls.loss(scores, torch.tensor([0]), margin=0.5, lam=0.1)
    torch.testing.assert_close(out, torch.tensor([0.474273]), atol=1e-6, rtol=0)
    # defaults m = 10, λ = 0.1 on z = [15, 0, 0], y = 0: penalty mean [0, 5, 5] = 10/3 -> + 1/3
    scores = torch.tensor([[15.0, 0.0, 0.0]])
    ce_value = math.log(1 + 2 * math.exp(-15))
    torch.testing.assert_close(call("mbls", scores, torch.tensor([0])), torch.tensor([ce_value + 1 / 3]))


def test_ecp_by_hand():
    # z = [0, 0], y = 0: p = [.5, .5], CE = log 2, H = log 2, K = 2, β = .1
    # normalised: log 2 - .1 * log 2 / 2 = .95 log 2;  not normalised: log 2 - .1 log 2 = .9 log 2
    scores = torch.zeros(1, 2)
    torch.testing.assert_close(ecp.loss(scores, torch.tensor([0])), torch.tensor([0.95 * math.log(2)]))
    torch.testing.assert_close(ecp.loss(scores, torch.tensor([0]), normalize_entropy=False),
                               torch.tensor([0.9 * math.log(2)]))
    # z = [log 3, 0, 0], y = 1: CE = log 5, H = -(.6 log .6 + .4 log .2) = 0.950271; loss = log 5 - .1 * H / 3
    entropy = -(0.6 * math.log(0.6) + 0.4 * math.log(0.2))
    assert entropy == pytest.approx(0.950271, abs=1e-6)
    out = ecp.loss(torch.tensor([[LOG3, 0.0, 0.0]]), torch.tensor([1]), beta=0.1)
    torch.testing.assert_close(out, torch.tensor([math.log(5) - 0.1 * entropy / 3]))


def test_focal_by_hand_and_gamma_zero_is_ce():
    # z = [log 3, 0, 0]: y = 0: p = 3/5 -> (2/5)^2 log(5/3) = 0.16 * 0.510826 = 0.081732
    #                    y = 1: p = 1/5 -> (4/5)^2 log 5   = 0.64 * 1.609438 = 1.030040
    scores = torch.tensor([[LOG3, 0.0, 0.0], [LOG3, 0.0, 0.0]])
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(focal.loss(scores, labels), torch.tensor([0.081732, 1.030040]), atol=1e-6, rtol=0)
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(5, 4, generator=g)
    scores[0, 3] = NEG_INF
    scores[4, 0] = 30.0  # p_y -> 1 for y = 0: 0^0 = 1, still CE
    labels = torch.tensor([0, 1, 2, 3, 0])
    torch.testing.assert_close(focal.loss(scores, labels, gamma=0.0), ce.loss(scores, labels))


def test_sft_is_minus_gold_log_prob():
    # log-probs [-0.5, -2.0, -inf], y = 0 -> 0.5; y = 1 -> 2.0
    scores = torch.tensor([[-0.5, -2.0, NEG_INF], [-0.5, -2.0, NEG_INF]])
    torch.testing.assert_close(sft.loss(scores, torch.tensor([0, 1])), torch.tensor([0.5, 2.0]))
    with pytest.raises(ValueError, match="log-probability"):
        sft.loss(torch.tensor([[0.3, -1.0]]), torch.tensor([0]))
    assert OBJECTIVES["sft"].needs_logprob_scores and get_objective("sft").needs_logprob_scores
    assert not any(OBJECTIVES[n].needs_logprob_scores for n in OBJECTIVES if n != "sft")


# ---------------------------------------------------------------- CogCalib

def _by_hand_cal(scores: torch.Tensor, regularizer: str, margin: float) -> torch.Tensor:
    """L_cal for full-K rows, written independently of the library."""
    log_p = torch.log_softmax(scores, dim=-1)
    if regularizer == "ls":
        return -log_p.mean(dim=-1)
    if regularizer == "mbls":
        return torch.relu(scores.max(dim=-1, keepdim=True).values - scores - margin).mean(dim=-1)
    return (log_p.exp() * log_p).mean(dim=-1)  # -H / K


@pytest.mark.parametrize("regularizer", ["ls", "mbls", "ecp"])
def test_cogcalib_known_mask(regularizer):
    g = torch.Generator().manual_seed(2)
    scores, labels = 3 * torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    objective = get_objective("cogcalib", regularizer=regularizer, alpha=0.7, margin=1.0)
    plain = F.cross_entropy(scores, labels, reduction="none")
    torch.testing.assert_close(objective(scores, labels, known=torch.zeros(6, dtype=torch.bool)), plain)
    expected = plain + 0.7 * _by_hand_cal(scores, regularizer, 1.0)
    torch.testing.assert_close(objective(scores, labels, known=torch.ones(6, dtype=torch.bool)), expected)
    known = torch.tensor([True, False, True, False, False, True])
    torch.testing.assert_close(objective(scores, labels, known=known), torch.where(known, expected, plain))


def test_cogcalib_by_hand_and_relation_to_the_standalone_losses():
    # CoLS on z = [log 3, 0, 0], y = 0, α = 1: CE + U = 0.510826 + 1.243234 = 1.754060
    scores = torch.tensor([[LOG3, 0.0, 0.0]])
    out = cogcalib.loss(scores, torch.tensor([0]), known=torch.tensor([True]))
    torch.testing.assert_close(out, torch.tensor([1.754060]), atol=1e-6, rtol=0)

    g = torch.Generator().manual_seed(3)
    scores, labels = 3 * torch.randn(5, 4, generator=g), torch.randint(0, 4, (5,), generator=g)
    known = torch.ones(5, dtype=torch.bool)
    # CoMbLS with α = λ and CoECP with α = β are MbLS / ECP on known samples
    torch.testing.assert_close(cogcalib.loss(scores, labels, known=known, regularizer="mbls", alpha=0.2, margin=1.0),
                               mbls.loss(scores, labels, margin=1.0, lam=0.2))
    torch.testing.assert_close(cogcalib.loss(scores, labels, known=known, regularizer="ecp", alpha=0.2),
                               ecp.loss(scores, labels, beta=0.2))
    # LS(ε) = (1 - ε) * CoLS(α = ε / (1 - ε))
    eps = 0.1
    torch.testing.assert_close((1 - eps) * cogcalib.loss(scores, labels, known=known, alpha=eps / (1 - eps)),
                               label_smoothing.loss(scores, labels, epsilon=eps))


def test_cogcalib_known_checks():
    scores, labels = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="bool tensor"):
        cogcalib.loss(scores, labels, known=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="bool tensor"):
        cogcalib.loss(scores, labels, known=torch.tensor([True]))
    objective = CogCalibConfig()
    with pytest.raises(ValueError, match="known"):
        objective(scores, labels)
    with pytest.raises(ValueError, match="Expected state"):
        get_objective("ce")(scores, labels, known=torch.tensor([True, False]))


# ---------------------------------------------------------------- ragged options, dtype, gradients

@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_ragged_equals_unpadded(name):
    # an item with 3 real options padded to 5 with -inf gives the same per-sample loss as the 3-option item
    short = torch.tensor([[2.0, 1.0, 0.0], [0.5, -1.0, 3.0]])
    padded = torch.cat([short, torch.full((2, 2), NEG_INF)], dim=1)
    labels = torch.tensor([1, 2])
    params = {"margin": 0.5} if name in ("mbls", "cogcalib") else {}
    torch.testing.assert_close(call(name, padded, labels, **params), call(name, short, labels, **params))


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_gradients_finite_and_zero_on_unused_columns(name):
    scores = torch.tensor([[2.0, 1.0, 0.0, NEG_INF], [0.5, -1.0, 3.0, 1.0]], requires_grad=True)
    loss = call(name, scores, torch.tensor([1, 3]), margin=0.5) if name in ("mbls", "cogcalib") \
        else call(name, scores, torch.tensor([1, 3]))
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad[0, 3] == 0


def test_focal_gradient_finite_when_saturated():
    # p_y rounds to 1 in float32: (1 - p)^γ with 0 < γ < 1 must not give an inf * 0 = NaN gradient
    scores = torch.tensor([[40.0, 0.0]], requires_grad=True)
    focal.loss(scores, torch.tensor([0]), gamma=0.5).sum().backward()
    assert torch.isfinite(scores.grad).all()


def _gradcheck_cases():
    cases = [(n, {}) for n in ("ce", "ls", "ecp", "focal", "sft")]
    cases += [("mbls", {"margin": 1.0, "lam": 0.5}), ("ecp", {"normalize_entropy": False}), ("focal", {"gamma": 0.5})]
    cases += [("cogcalib", {"regularizer": r, "margin": 1.0, "alpha": 0.5}) for r in ("ls", "mbls", "ecp")]
    return cases


@pytest.mark.parametrize(("name", "params"), _gradcheck_cases())
def test_gradcheck(name, params):
    g = torch.Generator().manual_seed(4)
    base = 2 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    base[0, 3] = NEG_INF
    base[2, 2:] = NEG_INF
    labels = torch.tensor([1, 3, 0])
    objective = get_objective(name, **params)
    state = state_for(objective, torch.tensor([True, False, True]))
    if objective.needs_logprob_scores:
        base = torch.log_softmax(base, dim=-1) - 0.1  # strictly negative: eps-perturbations stay <= 0
    scores = base.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: objective(s, labels, **state), (scores,))


def test_low_precision_scores_are_upcast():
    scores = torch.tensor([[2.0, 1.0, 0.0, NEG_INF]], dtype=torch.bfloat16)
    out = ce.loss(scores, torch.tensor([0]))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([math.log(1 + math.exp(-1) + math.exp(-2))]))


def test_helpers():
    scores = torch.tensor([[2.0, 1.0, 0.0, NEG_INF], [0.0, 0.0, 0.0, 0.0]])
    log_p = option_log_probs(scores)
    assert log_p[0, 3] == NEG_INF
    torch.testing.assert_close(log_p.exp().sum(dim=-1), torch.ones(2))
    torch.testing.assert_close(log_p[1], torch.full((4,), -math.log(4)))
    labels = torch.tensor([0, 2])
    torch.testing.assert_close(per_sample_nll(scores, labels), -log_p.gather(1, labels[:, None]).squeeze(1))


@pytest.mark.parametrize(("scores", "labels", "match"), [
    (torch.tensor([[0.0, math.nan]]), torch.tensor([0]), "NaN"),
    (torch.tensor([[0.0, math.inf]]), torch.tensor([0]), r"\+inf"),
    (torch.tensor([[NEG_INF, NEG_INF]]), torch.tensor([0]), "all -inf"),
    (torch.tensor([[0.0, 1.0]]), torch.tensor([2]), r"label in \[0, 2\), but labels\[0\] = 2"),
    (torch.tensor([[0.0, 1.0], [0.0, NEG_INF]]), torch.tensor([0, 1]), r"labels\[1\] points at a -inf column"),
    (torch.tensor([0.0, 1.0]), torch.tensor([0]), r"shape \(B, K_max\)"),
    (torch.tensor([[0.0, 1.0]]), torch.tensor([0.0]), "integer tensor"),
    (torch.tensor([[0.0, 1.0]]), torch.tensor([0, 1]), "integer tensor"),
])
def test_input_errors(scores, labels, match):
    for name in OBJECTIVES:
        objective = get_objective(name)
        state = state_for(objective, torch.ones(len(labels), dtype=torch.bool))
        with pytest.raises(ValueError, match=match):
            objective(scores, labels, **state)


# ---------------------------------------------------------------- registry

def test_registry_contents_and_flags():
    assert set(OBJECTIVES) == {"ce", "ls", "mbls", "ecp", "focal", "sft", "cogcalib", "rcft"}
    assert [n for n, c in OBJECTIVES.items() if c.needs_known] == ["cogcalib"]
    for name, cls in OBJECTIVES.items():
        assert cls.name == name
        config = get_objective(name)
        assert isinstance(config, cls)
        for f in fields(cls):
            assert f.metadata.get("help"), f"{name}.{f.name} has no help"
        # config fields are exactly the loss function's hyper-parameters, with the same defaults
        signature = inspect.signature(cls.loss_fn)
        hyper = {p.name: p.default for p in signature.parameters.values()
                 if p.kind is p.KEYWORD_ONLY and p.name not in cls.state_keys}
        assert hyper == config.params()


def test_defaults():
    assert get_objective("ls").epsilon == 0.05
    assert (get_objective("mbls").margin, get_objective("mbls").lam) == (10.0, 0.1)
    assert (get_objective("ecp").beta, get_objective("ecp").normalize_entropy) == (0.1, True)
    assert get_objective("focal").gamma == 2.0
    assert (get_objective("cogcalib").alpha, get_objective("cogcalib").regularizer) == (1.0, "ls")


@pytest.mark.parametrize(("name", "params", "match"), [
    ("nope", {}, r"one of \['ce', 'cogcalib', 'ecp', 'focal', 'ls', 'mbls', 'rcft', 'rcft-code', 'sft'\]"),
    ("ls", {"eps": 0.1}, r"valid parameters: \['epsilon'\]"),
    ("ce", {"epsilon": 0.1}, r"valid parameters: \[\]"),
    ("ls", {"epsilon": 1.5}, r"`epsilon`.*\[0.0, 1.0\]"),
    ("ls", {"epsilon": "0.1"}, "epsilon"),
    ("mbls", {"margin": -1.0}, "margin"),
    ("mbls", {"lam": math.nan}, "lam"),
    ("ecp", {"normalize_entropy": 1}, "bool"),
    ("focal", {"gamma": -1}, "gamma"),
    ("focal", {"gamma": True}, "gamma"),
    ("cogcalib", {"regularizer": "focal"}, r"\('ls', 'mbls', 'ecp'\)"),
    ("cogcalib", {"alpha": -0.1}, "alpha"),
])
def test_registry_errors(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_objective(name, **params)


# ---------------------------------------------------------------- Youden's J

def test_youden_by_hand():
    # nll   0.1 0.2 0.3 0.4 0.5 ; known T T F T F  (P = 3, N = 2); known iff nll <= t
    # t=-inf: J=0 | t=.15: 1/3+1-1=1/3 | t=.25: 2/3+1-1=2/3 | t=.35: 2/3+1/2-1=1/6 | t=.45: 1+1/2-1=1/2 | t=inf: 0
    th = youden_threshold(np.array([0.3, 0.1, 0.5, 0.2, 0.4]), np.array([False, True, False, True, True]))
    assert th == Threshold(t=pytest.approx(0.25), j=pytest.approx(2 / 3), tpr=pytest.approx(2 / 3), tnr=1.0)


def test_youden_ties_duplicates_and_degenerate():
    # nll 1 2 3 4, known T F T F: t=1.5: 1/2+1-1 = 1/2; t=2.5: 1/2+1/2-1 = 0; t=3.5: 1+1/2-1 = 1/2 -> tie, smallest t
    th = youden_threshold([1.0, 2.0, 3.0, 4.0], [True, False, True, False])
    assert (th.t, th.j, th.tpr, th.tnr) == (1.5, 0.5, 0.5, 1.0)
    # duplicates: nll 1 1 2 3, known T T F T (P=3, N=1): t=1.5: 2/3+1-1 = 2/3; t=2.5: 2/3+0-1 < 0; t=inf: 0
    th = youden_threshold(torch.tensor([1.0, 1.0, 2.0, 3.0]), torch.tensor([True, True, False, True]))
    assert th.t == 1.5 and th.j == pytest.approx(2 / 3)
    # a value shared by a known and an unknown sample cannot be split: nll 1 1 2, known T F T
    # t=1.5: 1/2+0-1 = -1/2; t=-inf and t=inf: 0 -> tie, smallest: -inf (nobody known)
    th = youden_threshold([1.0, 1.0, 2.0], [1, 0, 1])
    assert (th.t, th.j, th.tpr, th.tnr) == (-math.inf, 0.0, 0.0, 1.0)
    # perfectly separated: J = 1
    assert youden_threshold([0.2, 0.1, 3.0], [True, True, False]) == Threshold(t=1.6, j=1.0, tpr=1.0, tnr=1.0)
    # adjacent floats: the threshold still separates them
    a = 1.0
    b = float(np.nextafter(a, 2.0))
    th = youden_threshold([a, b], [True, False])
    assert a <= th.t < b and th.j == 1.0


def test_youden_matches_brute_force():
    rng = np.random.default_rng(5)
    for _ in range(20):
        nll = rng.integers(0, 8, size=30) / 4.0  # many ties
        known = rng.random(30) < 0.5 + 0.3 * (nll < 1)
        if known.all() or not known.any():
            continue
        th = youden_threshold(nll, known)
        grid = np.concatenate(([-np.inf], np.unique(nll) + 0.125))
        j = [(known & (nll <= t)).sum() / known.sum() + (~known & (nll > t)).sum() / (~known).sum() - 1 for t in grid]
        assert th.j == pytest.approx(max(j))
        assert th.t == pytest.approx(grid[int(np.argmax(np.round(j, 12)))])


@pytest.mark.parametrize(("nll", "known", "match"), [
    ([], [], "at least one"),
    ([1.0, 2.0], [True, True], "both known and unknown"),
    ([1.0, 2.0], [False, False], "both known and unknown"),
    ([1.0, 2.0], [True], "booleans"),
    ([1.0, 2.0], [0.5, 1.0], "booleans"),
    ([1.0, math.nan], [True, False], "finite"),
])
def test_youden_errors(nll, known, match):
    with pytest.raises(ValueError, match=match):
        youden_threshold(np.asarray(nll, dtype=float), np.asarray(known))
