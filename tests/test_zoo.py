"""The model zoo: scikit-learn contract, log targets, seeds, leak-free statistics, multi-target."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from perfpred.errors import InvalidInputError
from perfpred.models import (
    REGRESSORS,
    BlendRegressor,
    GridNeighbourRegressor,
    LogTargetForestRegressor,
    LogTargetHGBRegressor,
    LogTargetXGBRegressor,
    MultiTargetModel,
    PerformanceModel,
    TorchGPRegressor,
    TorchMLPRegressor,
    mape,
)

rng = np.random.default_rng(0)


def smooth_problem(n: int = 400, seed: int = 0):
    r = np.random.default_rng(seed)
    X = r.uniform(-1, 1, size=(n, 4))
    y = np.exp(1.5 * X[:, 0] - X[:, 1] ** 2 + 0.5 * X[:, 0] * X[:, 2] + 0.02 * r.normal(size=n))
    return X, y


def tiny_mlp(**kw) -> TorchMLPRegressor:
    return TorchMLPRegressor(**{"hidden_layer_sizes": (32, 32), "max_epochs": 60, "batch_size": 64,
                                "n_threads": 1, **kw})


FAST = {
    "hgb": lambda: LogTargetHGBRegressor(max_iter=100, n_threads=1),
    "forest": lambda: LogTargetForestRegressor(n_estimators=50, n_jobs=1),
    "random-forest": lambda: LogTargetForestRegressor(method="random", n_estimators=50, n_jobs=1),
    "mlp": tiny_mlp,
    "gp": lambda: TorchGPRegressor(n_iter=40, n_threads=1),
}


@pytest.mark.parametrize("name", sorted(FAST))
def test_regressors_fit_log_targets_and_keep_the_contract(name):
    X, y = smooth_problem()
    model = FAST[name]()
    with pytest.raises(NotFittedError):
        model.predict(X[:5])
    assert model.__sklearn_tags__().target_tags.positive_only
    fitted = clone(model).fit(X[:300], y[:300])
    pred = fitted.predict(X[300:])
    assert pred.shape == (100,) and np.all(pred > 0)
    assert mape(y[300:], pred) < 25.0
    assert clone(model).get_params() == model.get_params()
    with pytest.raises(InvalidInputError, match="target > 0"):
        clone(model).fit(X[:50], -y[:50])


@pytest.mark.parametrize("name", sorted(FAST))
def test_regressors_accept_missing_values(name):
    X, y = smooth_problem(200)
    X = X.copy()
    X[::7, 1] = np.nan
    X[:, 3] = np.nan  # a column that is never known
    pred = FAST[name]().fit(X, y).predict(X)
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)


def test_mlp_is_seeded_and_standardises_with_training_rows_only():
    X, y = smooth_problem(300)
    a = tiny_mlp(random_state=3, max_epochs=10).fit(X, y)
    b = tiny_mlp(random_state=3, max_epochs=10).fit(X, y)
    c = tiny_mlp(random_state=4, max_epochs=10).fit(X, y)
    np.testing.assert_allclose(a.predict(X), b.predict(X))
    assert not np.allclose(a.predict(X), c.predict(X))
    # Statistics come from the fit rows (the validation slice excluded), never from predict inputs.
    order = np.random.RandomState(3).permutation(300)
    fit_rows = order[round(300 * a.validation_fraction):]
    np.testing.assert_allclose(a.mean_, X[fit_rows].mean(axis=0))
    mean_before = a.mean_.copy()
    a.predict(X + 100.0)
    np.testing.assert_array_equal(a.mean_, mean_before)
    assert a.n_epochs_ >= 1 and a.n_epochs_ <= 10 and len(a.history_) == a.n_epochs_


def test_mlp_early_stopping_keeps_the_best_epoch():
    X, y = smooth_problem(300)
    model = tiny_mlp(max_epochs=200, patience=3, learning_rate=0.05, random_state=1).fit(X, y)
    assert model.n_epochs_ < 200
    assert model.n_epochs_ - 1 - int(np.argmin(model.history_)) == 3  # stopped `patience` epochs after the best


@pytest.mark.parametrize(("params", "match"), [
    ({"activation": "swish"}, "activation"), ({"batch_size": 0}, "batch_size"),
    ({"validation_fraction": 1.5}, "validation_fraction"), ({"learning_rate": 0}, "learning_rate"),
])
def test_mlp_rejects_bad_parameters(params, match):
    X, y = smooth_problem(50)
    with pytest.raises(InvalidInputError, match=match):
        tiny_mlp(**params).fit(X, y)


def test_forest_rejects_unknown_method():
    X, y = smooth_problem(50)
    with pytest.raises(InvalidInputError, match="method"):
        LogTargetForestRegressor(method="boosted").fit(X, y)


def grid_frame(values: dict[str, list[int]], drop: float = 0.0, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A complete parameter grid (as kernel_features names it) with a multiplicative runtime."""
    combos = np.array(list(itertools.product(*values.values())), dtype=float)
    df = pd.DataFrame(combos, columns=[f"p_{k}" for k in values])
    r = np.random.default_rng(seed)
    ly = (np.log(df["p_A"]) - 0.5 * np.log(df["p_B"]) + 0.3 * (df["p_C"] == 2) + 0.4 * np.log(df["p_A"])
          * (df["p_D"] == 1))
    y = np.exp(ly.to_numpy() + 0.01 * r.normal(size=len(df)))
    keep = r.random(len(df)) >= drop
    return df[keep].reset_index(drop=True), y[keep]


def test_grid_neighbours_help_on_a_dense_grid():
    df, y = grid_frame({"A": [1, 2, 4, 8, 16], "B": [1, 2, 4, 8], "C": [1, 2, 3], "D": [0, 1], "E": [1, 2, 4]})
    df["other"] = rng.normal(size=len(df))  # not a grid column: never part of the neighbour key
    idx = np.random.RandomState(0).permutation(len(df))
    tr, te = idx[: int(0.8 * len(df))], idx[int(0.8 * len(df)):]
    base = LogTargetXGBRegressor(n_estimators=60, max_depth=3, n_jobs=1)
    grid = GridNeighbourRegressor(base=base).fit(df.iloc[tr], y[tr])
    plain = clone(base).fit(df.iloc[tr], y[tr])
    assert list(grid.grid_columns_) == [0, 1, 2, 3, 4]
    assert mape(y[te], grid.predict(df.iloc[te])) < mape(y[te], plain.predict(df.iloc[te]))
    assert mape(y[te], grid.predict(df.iloc[te])) < 5.0


def test_grid_neighbour_estimates_never_use_the_rows_own_target():
    df, y = grid_frame({"A": [1, 2, 4], "B": [1, 2], "C": [1, 2], "D": [0, 1]})
    model = GridNeighbourRegressor(base=LogTargetXGBRegressor(n_estimators=10, n_jobs=1), n_folds=2).fit(df, y)
    codes = model._codes(df.to_numpy(float))
    # An estimate built from the other rows only is unchanged when this row's own target changes.
    spiked = np.log(y).copy()
    spiked[0] += 5.0
    others = np.arange(1, len(df))
    est_a = model._estimates(model._tables(codes[others], np.log(y)[others]), codes[[0]])
    est_b = model._estimates(model._tables(codes[others], spiked[others]), codes[[0]])
    np.testing.assert_array_equal(est_a, est_b)
    # Unseen levels at predict time get no neighbours through that parameter, and still a prediction.
    unseen = df.iloc[[0]].copy()
    unseen["p_A"] = 3.0
    assert np.isfinite(model.predict(unseen)).all()


def test_grid_neighbour_needs_grid_columns_and_one_hot_adds_levels():
    df, y = grid_frame({"A": [1, 2, 4], "B": [1, 2, 3], "C": [1, 2], "D": [0, 1]})
    with pytest.raises(InvalidInputError, match="grid_prefix"):
        GridNeighbourRegressor(grid_prefix="q_").fit(df, y)
    base = tiny_mlp(max_epochs=5)
    model = GridNeighbourRegressor(base=base, one_hot=True, random_state=2).fit(df, y)
    assert model.base_.random_state == 2  # the base model follows the stack's seed
    # 4 columns + 4 estimates + spread, count, mean + one-hot of A and B (3 levels each; 2-level ones stay numeric)
    assert model.base_.n_features_in_ == 4 + 4 + 3 + 3 + 3


def test_blend_is_a_weighted_geometric_mean():
    X, y = smooth_problem(200)
    a, b = LogTargetXGBRegressor(n_estimators=30, n_jobs=1), LogTargetForestRegressor(n_estimators=20, n_jobs=1)
    blend = BlendRegressor([("a", a), ("b", b)], weights=[3, 1], random_state=5).fit(X, y)
    pa = clone(a).set_params(random_state=5).fit(X, y).predict(X)
    pb = clone(b).set_params(random_state=6).fit(X, y).predict(X)
    np.testing.assert_allclose(blend.predict(X), pa**0.75 * pb**0.25, rtol=1e-6)
    with pytest.raises(InvalidInputError, match="weights"):
        BlendRegressor([("a", a)], weights=[1, 2]).fit(X, y)
    with pytest.raises(InvalidInputError, match="estimators"):
        BlendRegressor([]).fit(X, y)
    # reseed_members=False: each member keeps its own seed, so the blend of two cross-validated
    # candidates predicts exactly the geometric mean of theirs.
    kept = BlendRegressor([("a", a), ("b", b)], random_state=5, reseed_members=False).fit(X, y)
    np.testing.assert_allclose(kept.predict(X), np.sqrt(clone(a).fit(X, y).predict(X) * clone(b).fit(X, y).predict(X)),
                               rtol=1e-6)


def test_blend_fits_its_members_side_by_side_to_the_same_model(monkeypatch):
    import joblib

    pools = []

    class CountedParallel(joblib.Parallel):
        def __init__(self, *args, **kwargs):
            pools.append(kwargs.get("n_jobs"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(joblib, "Parallel", CountedParallel)
    X, y = smooth_problem(200)
    members = [("a", LogTargetXGBRegressor(n_estimators=30, n_jobs=1)),
               ("b", LogTargetForestRegressor(n_estimators=20, n_jobs=1)), ("c", tiny_mlp(max_epochs=5))]
    one_by_one = BlendRegressor(members, random_state=5).fit(X, y)
    assert pools == []
    side_by_side = BlendRegressor(members, random_state=5, n_jobs=2).fit(X, y)
    assert pools == [2]  # the members went to a pool of two processes
    assert [m.random_state for m in side_by_side.estimators_] == [5, 6, 7]
    np.testing.assert_allclose(side_by_side.predict(X), one_by_one.predict(X), rtol=1e-6)
    for bad in (0, 1.5, True):
        with pytest.raises(InvalidInputError, match="n_jobs") as excinfo:
            BlendRegressor(members, n_jobs=bad).fit(X, y)
        assert "\n" not in str(excinfo.value)


def test_gp_interpolates_few_rows_better_than_trees_and_learns_which_features_matter():
    X, y = smooth_problem(380, seed=3)
    train, test = slice(0, 80), slice(80, None)
    gp = TorchGPRegressor(n_iter=100, n_threads=1).fit(X[train], y[train])
    forest = LogTargetForestRegressor(n_estimators=200, n_jobs=1).fit(X[train], y[train])
    assert mape(y[test], gp.predict(X[test])) < 0.5 * mape(y[test], forest.predict(X[test]))
    # Column 3 never enters y: its ARD length scale grows past the one of column 0 (the strongest).
    assert gp.length_scales_[0, 3] > 3 * gp.length_scales_[0, 0]
    assert gp.noise_variance_ < 0.05 and gp.history_[-1] < gp.history_[0]


def test_gp_posterior_spread_is_small_at_measured_rows_and_grows_away_from_them():
    X, y = smooth_problem(60, seed=5)
    gp = TorchGPRegressor(n_iter=60, n_threads=1).fit(X[:40], y[:40])
    mean, std = gp.predict_log(X[:40], return_std=True)
    np.testing.assert_allclose(np.exp(mean), gp.predict(X[:40]))
    far = X[:5] + 1e3 * X.std(axis=0)  # far outside the training rows
    _, std_far = gp.predict_log(far, return_std=True)
    assert std.max() < 0.2 * std_far.min()
    # Far away only the prior remains: its spread is the output scale, in log(y) units.
    np.testing.assert_allclose(std_far, np.sqrt(gp.output_scales_.sum()) * gp.y_scale_, rtol=1e-3)


def test_summed_gp_kernels_fit_a_short_ripple_beside_a_smooth_trend():
    # One length scale per feature cannot be short for the ripple along x0 and long for the
    # trend over x1..x3 at once; two summed kernels can (each component its own scales).
    one, two = [], []
    for seed in range(3):
        r = np.random.default_rng(seed)
        X = r.uniform(-1, 1, size=(300, 6))
        y = np.exp(0.3 * np.sin(9 * X[:, 0]) + 1.2 * X[:, 1] + 0.8 * X[:, 2] * X[:, 3] + 0.6 * X[:, 3]
                   + 0.01 * r.normal(size=300))
        for n_kernels, scores in ((1, one), (2, two)):
            gp = TorchGPRegressor(n_kernels=n_kernels, n_iter=100, n_threads=1).fit(X[:150], y[:150])
            scores.append(mape(y[150:], gp.predict(X[150:])))
    assert gp.length_scales_.shape == (2, 6) and gp.output_scales_.shape == (2,)
    assert np.mean(two) < 0.85 * np.mean(one)


def test_gp_drops_constant_columns_and_refuses_large_or_bad_inputs():
    X, y = smooth_problem(60)
    X = np.column_stack([X, np.full(len(X), 7.0)])
    gp = TorchGPRegressor(n_iter=10, n_threads=1).fit(X, y)
    assert list(gp.columns_) == [0, 1, 2, 3] and gp.length_scales_.shape == (1, 4)
    with pytest.raises(InvalidInputError, match=r"rows <= max_train_rows.*rows=60 > max_train_rows=50"):
        TorchGPRegressor(max_train_rows=50).fit(X, y)
    with pytest.raises(InvalidInputError, match="kernel"):
        TorchGPRegressor(kernel="linear").fit(X, y)
    with pytest.raises(InvalidInputError, match="n_iter"):
        TorchGPRegressor(n_iter=0).fit(X, y)
    with pytest.raises(InvalidInputError, match=r"n_kernels <= 4.*n_kernels=5"):
        TorchGPRegressor(n_kernels=5).fit(X, y)
    with pytest.raises(InvalidInputError, match="learning_rate > 0"):
        TorchGPRegressor(learning_rate=float("nan")).fit(X, y)
    rbf = TorchGPRegressor(kernel="rbf", n_iter=30, n_threads=1).fit(X[:50], y[:50])
    assert mape(y[50:], rbf.predict(X[50:])) < 25.0


def test_registry_names_and_residual_mode(synthetic_gemm_table):
    for name in ("hgb", "forest", "mlp", "grid-xgb", "gp", "gp4", "xgb-quantile", "xgb-ensemble"):
        assert name in REGRESSORS
    model = PerformanceModel(kind="gemm", regressor=LogTargetHGBRegressor(max_iter=50, n_threads=1))
    model.fit(synthetic_gemm_table)
    assert model.uses_residual_  # positive_only tag -> relative to the roofline
    assert np.all(model.predict(synthetic_gemm_table.head(5)) > 0)


def test_multi_target_model_fits_each_target_where_known(synthetic_gemm_table):
    df = synthetic_gemm_table.copy()
    df["power_w"] = 50.0 + 10.0 * np.log1p(df["runtime_ms"])
    df.loc[df.index[::3], "power_w"] = np.nan  # power not recorded for a third of the rows
    reg = LogTargetXGBRegressor(n_estimators=50, n_jobs=1)
    model = MultiTargetModel(kind="gemm", targets=("runtime_ms", "power_w"), regressor=reg,
                             residual_of={"power_w": None}).fit(df)
    assert model.n_train_ == {"runtime_ms": len(df), "power_w": len(df) - len(df.index[::3])}
    pred = model.predict(df.head(7))
    assert list(pred.columns) == ["runtime_ms", "power_w"] and list(pred.index) == list(df.head(7).index)
    assert (pred > 0).all().all()
    assert model.models_["runtime_ms"].uses_residual_ and not model.models_["power_w"].uses_residual_
    with pytest.raises(InvalidInputError, match="not in the table"):
        MultiTargetModel(targets=("energy_j_missing",)).fit(df)
    with pytest.raises(InvalidInputError, match="distinct"):
        MultiTargetModel(targets=("runtime_ms", "runtime_ms")).fit(df)


def test_kernel_models_span_hardware_through_spec_features():
    """One model over two synthetic GPUs: the spec features tell them apart."""
    rows = []
    for gpu, peak in (("gpu-a", 10000.0), ("gpu-b", 20000.0)):
        spec = json.dumps({"hardware_id": gpu, "peak_gflops": {"fp32": peak}, "mem_bw_gbs": 500.0, "sm_count": 40})
        for mwg, nwg, mdimc in itertools.product([16, 32, 64, 128], [16, 32, 64, 128], [8, 16]):
            runtime = 1e4 / peak * (1 + 8 / mwg) * (1 + 8 / nwg) * (1.2 if mdimc == 8 else 1.0)
            rows.append({"config.MWG": mwg, "config.NWG": nwg, "config.MDIMC": mdimc, "config.NDIMC": 8,
                         "workload.problem_size_x": 1024, "hardware_json": spec, "runtime_ms": runtime})
    df = pd.DataFrame(rows)
    model = PerformanceModel(kind="kernel", regressor=LogTargetXGBRegressor(n_estimators=200, n_jobs=1)).fit(df)
    assert model.uses_residual_
    assert mape(df["runtime_ms"], model.predict(df)) < 3.0


def test_deep_trees_follow_a_power_of_two_cliff_on_held_out_configs():
    """A space where power-of-two block widths run 15x faster than their neighbours (the W6600
    convolution pattern): "deep-trees" on the kernel features predicts held-out configs closely."""
    rows = []
    for bx, by, tx in itertools.product(range(16, 257, 16), [1, 2, 4, 8], [1, 2, 3, 4]):
        fast = (bx & (bx - 1)) == 0 and tx != 3
        runtime = (1.0 if fast else 15.0) * (1.0 + 0.1 * np.log2(bx * by)) / tx**0.5
        rows.append({"config.block_size_x": bx, "config.block_size_y": by, "config.tile_size_x": tx,
                     "runtime_ms": runtime, "kind": "kernel"})
    df = pd.DataFrame(rows)
    test = np.random.default_rng(0).permutation(len(df))[: len(df) // 5]
    train = df.drop(index=test)
    model = PerformanceModel(kind="kernel", regressor="deep-trees").fit(train)
    err = np.abs(model.predict(df.loc[test]) / df.loc[test, "runtime_ms"].to_numpy() - 1)
    assert err.mean() < 0.05, err.mean()


def _gp_step_inputs(torch, rows: int, features: int, seed: int, log_noise: float):
    """Inputs of one fitting step of a two-kernel GP: Z, the target, and the log parameters
    (length scales, output scales, noise) and the constant mean."""
    r = np.random.default_rng(seed)
    Z = torch.from_numpy(r.normal(size=(rows, features)))
    target = torch.from_numpy(r.normal(size=rows))
    values = [torch.from_numpy(r.normal(scale=0.3, size=(2, features))), torch.tensor([0.1, -1.0], dtype=torch.float64),
              torch.tensor(log_noise, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64)]
    return Z, target, values


@pytest.mark.parametrize("kernel", ["matern52", "rbf"])
def test_gp_closed_form_gradients_match_autograd(kernel):
    torch = pytest.importorskip("torch")
    Z, target, values = _gp_step_inputs(torch, 30, 3, seed=0, log_noise=-2.0)
    gp = TorchGPRegressor(kernel=kernel, n_kernels=2)
    nll, grads = gp._nll_and_gradients(torch, Z, Z * Z, target, *values)
    params = [v.clone().requires_grad_(True) for v in values]
    log_ls, log_os, log_noise, const = params
    # The kernel written out plainly (no in-place buffers), so autograd can run through it.
    K = (_plain_kernel(torch, kernel, Z, Z, log_ls.exp(), log_os.exp())
         + log_noise.exp() * torch.eye(30, dtype=torch.float64))
    L = gp._cholesky(torch, K)  # with the model's jitter, as in fitting
    resid = (target - const).unsqueeze(1)
    expected = 0.5 * (resid * torch.cholesky_solve(resid, L)).sum() + torch.log(torch.diagonal(L)).sum()
    expected.backward()
    assert float(nll) == pytest.approx(float(expected.detach()), rel=1e-10)
    for got, param in zip(grads, params, strict=True):
        np.testing.assert_allclose(got.numpy(), param.grad.numpy(), rtol=1e-7, atol=1e-10)


def _plain_kernel(torch, kernel, A, B, length_scales, output_scales):
    """The summed kernel written out with cdist: the reference for the GP's in-place one."""
    K = 0
    for ls, scale in zip(length_scales, output_scales, strict=True):
        r = torch.cdist(A / ls, B / ls)
        s = 5.0 ** 0.5 * r
        K = K + scale * (torch.exp(-0.5 * r ** 2) if kernel == "rbf" else (1 + s + s ** 2 / 3) * torch.exp(-s))
    return K


@pytest.mark.parametrize("kernel", ["matern52", "rbf"])
def test_gp_kernel_between_different_rows_matches_the_plain_formula(kernel):
    # The prediction path: training rows against new rows (not the fit's rows against themselves).
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(1)
    A, B = torch.from_numpy(r.normal(size=(40, 4))), torch.from_numpy(r.normal(size=(25, 4)))
    ls = torch.from_numpy(np.exp(r.normal(scale=0.5, size=(3, 4))))
    scales = torch.tensor([1.0, 0.3, 0.1], dtype=torch.float64)
    got = TorchGPRegressor(kernel=kernel, n_kernels=3)._gram(torch, A, B, ls, scales)
    np.testing.assert_allclose(got.numpy(), _plain_kernel(torch, kernel, A, B, ls, scales).numpy(),
                               rtol=1e-9, atol=1e-12)


def test_gp_saved_before_summed_kernels_still_loads_and_predicts():
    X, y = smooth_problem(60)
    gp = TorchGPRegressor(n_iter=10, n_threads=1).fit(X[:40], y[:40])
    state = dict(gp.__getstate__())
    # What a one-kernel GP pickled before n_kernels existed holds.
    del state["n_kernels"]
    state["output_scale_"] = float(state.pop("output_scales_")[0])
    state["length_scales_"] = state["length_scales_"][0]
    old = TorchGPRegressor.__new__(TorchGPRegressor)
    old.__setstate__(state)
    np.testing.assert_allclose(old.predict(X[40:]), gp.predict(X[40:]))
    assert old.get_params()["n_kernels"] == 1


@pytest.mark.parametrize("kernel", ["matern52", "rbf"])
def test_gp_float32_fitting_steps_match_float64_ones(kernel):
    # float32 kernel passes and Cholesky factor, float64 distances: the likelihood and its
    # gradients agree with the float64 step to float32's precision, and are float64 tensors.
    torch = pytest.importorskip("torch")
    Z, target, values = _gp_step_inputs(torch, 60, 5, seed=2, log_noise=-3.0)
    steps = {precision: TorchGPRegressor(kernel=kernel, n_kernels=2, fit_precision=precision)._nll_and_gradients(
        torch, Z, Z * Z, target, *values) for precision in ("float64", "float32")}
    (nll64, grads64), (nll32, grads32) = steps["float64"], steps["float32"]
    assert nll32.dtype == torch.float64 and float(nll32) == pytest.approx(float(nll64), rel=1e-4)
    for got, expected in zip(grads32, grads64, strict=True):
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=2e-3, atol=1e-3 * float(abs(expected).max()))


def test_gp_fitted_in_float32_predicts_like_the_float64_fit():
    X, y = smooth_problem(200, seed=4)
    fits = {p: TorchGPRegressor(n_kernels=2, n_iter=60, n_threads=1, fit_precision=p).fit(X[:120], y[:120])
            for p in ("float64", "float32")}
    np.testing.assert_allclose(fits["float32"].predict(X[120:]), fits["float64"].predict(X[120:]), rtol=1e-3)
    with pytest.raises(InvalidInputError, match=r"fit_precision.*'float16'"):
        TorchGPRegressor(fit_precision="float16").fit(X, y)


def test_gp_kernel_matrix_that_no_jitter_mends_is_refused_in_one_line():
    torch = pytest.importorskip("torch")
    gp = TorchGPRegressor()
    with pytest.raises(InvalidInputError, match=r"positive definite.*targets\?\)$"):
        gp._cholesky(torch, -torch.eye(3, dtype=torch.float64))
    with pytest.raises(InvalidInputError, match=r"fit_precision='float64'"):
        gp._cholesky(torch, -torch.eye(3, dtype=torch.float32))


def test_auto_regressor_picks_by_cross_validation_and_refits_the_winner():
    from perfpred.models import AutoRegressor

    rng = np.random.default_rng(0)
    # A smooth surface: the GP interpolates it, trees answer in steps.
    X = pd.DataFrame({"a": rng.uniform(0, 1, 160), "b": rng.uniform(0, 1, 160)})
    smooth = np.exp(1.0 + np.sin(3 * X["a"]) + X["b"] ** 2).to_numpy()
    auto = AutoRegressor(candidates=("xgb", "gp"), cv_folds=4).fit(X, smooth)
    assert auto.chosen_ == "gp" and set(auto.cv_mape_pct_) == {"xgb", "gp"}
    assert auto.cv_mape_pct_["gp"] < auto.cv_mape_pct_["xgb"]
    np.testing.assert_array_equal(auto.predict(X), auto.estimator_.predict(X))
    # The scores are out-of-fold: the same shuffled folds, each fold predicted by a fit without it
    # (an in-sample score would be far lower).
    from sklearn.model_selection import KFold

    from perfpred.models import REGRESSORS

    pred = np.empty(len(smooth))
    for train, test in KFold(4, shuffle=True, random_state=0).split(X):
        pred[test] = REGRESSORS["xgb"](0).fit(X.iloc[train], smooth[train]).predict(X.iloc[test])
    assert auto.cv_mape_pct_["xgb"] == pytest.approx(np.mean(np.abs(pred - smooth) / smooth) * 100)
    in_sample = REGRESSORS["xgb"](0).fit(X, smooth).predict(X)
    assert np.mean(np.abs(in_sample - smooth) / smooth) * 100 < auto.cv_mape_pct_["xgb"] / 2


def test_auto_regressor_skips_a_candidate_that_refuses_the_table_and_names_bad_ones():
    from perfpred.models import AutoRegressor

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.uniform(0, 1, 5001)})
    auto = AutoRegressor(candidates=("xgb", "gp"), cv_folds=2).fit(X, np.exp(X["a"]).to_numpy())
    assert auto.chosen_ == "xgb" and "gp" not in auto.cv_mape_pct_  # the exact GP stops at 5,000 rows
    with pytest.raises(InvalidInputError, match="registered regressors"):
        AutoRegressor(candidates=("xgb", "nope")).fit(X.iloc[:20], np.ones(20))
    with pytest.raises(InvalidInputError, match="other than 'auto'"):
        AutoRegressor(candidates=("auto",)).fit(X.iloc[:20], np.ones(20))
    with pytest.raises(InvalidInputError, match="rows >= cv_folds"):
        AutoRegressor(cv_folds=4).fit(X.iloc[:3], np.ones(3))


def test_auto_regressor_never_chooses_a_candidate_that_predicts_nan(monkeypatch):
    from sklearn.base import BaseEstimator, RegressorMixin

    from perfpred.models import REGRESSORS, AutoRegressor

    class PredictsNaN(RegressorMixin, BaseEstimator):
        def fit(self, X, y):
            return self

        def predict(self, X):
            return np.full(len(X), np.nan)

    monkeypatch.setitem(REGRESSORS, "test-nan", lambda seed: PredictsNaN())
    X = pd.DataFrame({"a": np.linspace(0, 1, 40)})
    auto = AutoRegressor(candidates=("test-nan", "xgb"), cv_folds=2).fit(X, np.exp(X["a"]).to_numpy())
    assert np.isnan(auto.cv_mape_pct_["test-nan"]) and auto.chosen_ == "xgb"
