"""The tuner's kernel featurizer: derived kernel quantities beside the raw parameters."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError
from perfpred.tuner import (
    SearchSpace,
    Tuner,
    TuneSettings,
    kernel_tuning_features,
    mixed_tuning_features,
    param_features,
)
from perfpred.tuner._surrogate import EnsembleSurrogate, is_derived_column

GEMM = {"MWG": [16, 32, 64, 128], "NWG": [16, 32, 64, 128], "MDIMC": [8, 16, 32], "NDIMC": [8, 16, 32],
        "KWG": [16, 32], "SA": [0, 1]}


def gemm_candidates() -> pd.DataFrame:
    rows = [dict(zip(GEMM, values, strict=True)) for values in itertools.product(*GEMM.values())]
    frame = pd.DataFrame(rows)
    return frame[(frame["MWG"] >= frame["MDIMC"]) & (frame["NWG"] >= frame["NDIMC"])].reset_index(drop=True)


def test_derived_gemm_quantities_are_columns():
    cands = gemm_candidates()
    feats = kernel_tuning_features({"m": 1024, "n": 1024, "k": 1024})(cands)
    expected = cands["MWG"] * cands["NWG"] / (cands["MDIMC"] * cands["NDIMC"])
    np.testing.assert_allclose(feats["d_work_per_thread"], expected)
    np.testing.assert_allclose(feats["d_gemm_workgroups"], (1024 / cands["MWG"]) * (1024 / cands["NWG"]))
    assert len(feats) == len(cands) and np.isfinite(feats.to_numpy(dtype=float)).all()
    # The problem may be named with or without the measurement rows' "workload." prefix.
    prefixed = kernel_tuning_features({"workload.m": 1024, "workload.n": 1024, "workload.k": 1024})(cands)
    pd.testing.assert_frame_equal(feats, prefixed)


def test_a_known_gpu_adds_its_occupancy_and_an_unknown_one_adds_nothing():
    cands = gemm_candidates().assign(SB=0)  # local memory needs both SA and SB
    problem = {"m": 1024, "n": 1024, "k": 1024}
    kepler = kernel_tuning_features(problem, {"name": "NVIDIA GeForce GTX 680", "sm_count": 8})(cands)
    assert {"d_blocks_per_sm", "d_occupancy", "d_resident_waves"} <= set(kepler.columns)
    assert not any(c.startswith("hw_") for c in kepler.columns)  # one GPU: its spec is a constant
    # Shared memory binds where SA caches A: 128 x 32 floats = 16 KiB -> 3 work-groups in 48 KiB.
    big = (cands["MWG"] == 128) & (cands["KWG"] == 32) & (cands["SA"] == 1) & (cands["MDIMC"] == 32) \
        & (cands["NDIMC"] == 8) & (cands["NWG"] == 16)
    assert (kepler.loc[big, "d_blocks_per_sm"] == 3).all()
    unknown = kernel_tuning_features(problem, {"name": "AMD Radeon PRO W6600", "sm_count": 28})(cands)
    assert not {"d_blocks_per_sm", "d_occupancy"} & set(unknown.columns)


def test_constant_unknown_and_copied_columns_are_dropped():
    cands = gemm_candidates().assign(PRECISION=32)
    feats = kernel_tuning_features()(cands)  # no problem size: the quantities that need it are NaN
    assert "p_PRECISION" not in feats and "d_gemm_workgroups" not in feats
    values = feats.to_numpy(dtype=float)
    assert all((values[:, j] != values[0, j]).any() for j in range(values.shape[1]))
    assert len({values[:, j].tobytes() for j in range(values.shape[1])}) == values.shape[1]
    # d_tile_area (MWG x NWG) is kept; "SA" appears once as p_SA, not again as an identical copy.
    assert "d_tile_area" in feats and "p_SA" in feats


def test_a_space_without_derived_rules_still_gets_its_parameters():
    cands = pd.DataFrame({"threads": [1, 2, 4, 8] * 3, "layout": ["row", "col", "tiled"] * 4})
    feats = kernel_tuning_features()(cands)
    assert {"p_threads", "log2_p_threads", "p_layout"} <= set(feats.columns)
    assert not any(c.startswith("d_") for c in feats.columns if c != "d_waves")


def work_per_thread_ms(frame) -> np.ndarray:
    """A runtime set by accumulators per thread (best at 16) and nothing else the raw params say directly."""
    wpt = np.asarray(frame["MWG"], float) * np.asarray(frame["NWG"], float) / (
        np.asarray(frame["MDIMC"], float) * np.asarray(frame["NDIMC"], float))
    return 1.0 + np.abs(np.log2(wpt) - 4.0)


def test_derived_columns_let_the_surrogate_learn_from_few_measurements():
    """Fitted on 24 measured configs, the surrogate ranks the other configs of a landscape set by a
    derived quantity better with the derived columns than from the raw parameters alone."""
    cands = gemm_candidates()
    y = np.log(work_per_thread_ms(cands))
    rng = np.random.default_rng(0)
    measured = rng.choice(len(cands), 24, replace=False)
    rest = np.setdiff1d(np.arange(len(cands)), measured)
    rho = {}
    for name, featurize in (("raw", param_features), ("derived", kernel_tuning_features())):
        X = featurize(cands)
        fit = EnsembleSurrogate(seed=0).fit_predict(X.iloc[measured], y[measured], np.ones(24, bool), X)
        rho[name] = pd.Series(fit.mean_log[rest]).corr(pd.Series(y[rest]), method="spearman")
    assert rho["derived"] > rho["raw"] + 0.1, rho


class WorkPerThreadHardware:
    def __init__(self) -> None:
        self.calls = 0

    def measure(self, config) -> Measurement:
        self.calls += 1
        frame = {k: [v] for k, v in dict(config).items()}
        return Measurement(kind="kernel", workload={}, config=dict(config), hardware_id="synthetic-0",
                           runtime_ms=float(work_per_thread_ms(frame)[0]))


def test_tuner_runs_on_the_kernel_featurizer():
    cands = gemm_candidates()
    space = SearchSpace({k: sorted(cands[k].unique().tolist()) for k in cands.columns})
    hardware = WorkPerThreadHardware()
    result = Tuner(space, hardware, TuneSettings(budget=16, batch_size=4, seed=0), candidates=cands,
                   featurize=kernel_tuning_features({"m": 1024, "n": 1024, "k": 1024})).run()
    assert result.n_evaluations == hardware.calls == 16
    assert result.best_value == pytest.approx(1.0)  # 16 accumulators per thread: the optimum


def test_a_replay_session_knows_its_problem_for_the_derived_features():
    from perfpred.settings import datasets_dir
    from perfpred.tuner._session import open_session

    session = open_session(f"replay:{datasets_dir() / 'kernel-tuner' / 'convolution' / 'A4000.json.gz'}")
    assert session.workload["problem_size_x"] == session.workload["problem_size_y"] == 4096
    assert not set(session.workload) & set(session.space.names)
    feats = kernel_tuning_features(session.workload)(session.candidates)
    # Blocks launched over the 4096 x 4096 image, per config.
    cands = session.candidates
    expected = (np.ceil(4096 / (cands["block_size_x"] * cands["tile_size_x"]))
                * np.ceil(4096 / (cands["block_size_y"] * cands["tile_size_y"])))
    np.testing.assert_allclose(feats["d_grid_blocks"], expected)


def test_a_single_candidate_keeps_its_parameter_columns():
    feats = kernel_tuning_features()(pd.DataFrame({"MWG": [64], "NWG": [32]}))
    assert list(feats.columns) == ["p_MWG", "p_NWG"] and len(feats) == 1


def test_a_replay_gives_its_problem_for_the_derived_features():
    """What tuning.py and ``perfpred tune`` pass to the featurizer: the workload the replay shares."""
    from perfpred.collect._replay import ReplayBackend
    from perfpred.settings import datasets_dir

    backend = ReplayBackend.from_file(datasets_dir() / "kernel-tuner" / "gemm" / "RTX_3090.json.gz")
    problem = backend.problem()
    assert problem["problem_size_x"] == 4096 and not set(problem) & set(backend.keys)
    cands = pd.DataFrame([c.as_dict() for c in backend.configs()]).head(500)
    feats = kernel_tuning_features(problem)(cands)
    np.testing.assert_allclose(feats["d_gemm_workgroups"], (4096 / cands["MWG"]) * (4096 / cands["NWG"]))


def test_raw_features_mark_powers_of_two_for_a_search_without_prior():
    cands = pd.DataFrame({"block_size_x": [16, 48, 64, 80], "tile": [1, 2, 4, 8], "flag": [0, 1, 0, 1]})
    assert not any(c.startswith("pow2_") for c in param_features(cands))  # off unless asked
    feats = param_features(cands, powers_of_two=True)
    assert list(feats["pow2_block_size_x"]) == [1, 0, 1, 0]
    assert "pow2_tile" not in feats and "pow2_flag" not in feats  # all powers of two / has zeros
    space = SearchSpace({k: sorted(cands[k].unique().tolist()) for k in cands.columns})
    cold = Tuner(space, WorkPerThreadHardware(), TuneSettings(budget=4), candidates=cands)
    warm = Tuner(space, WorkPerThreadHardware(), TuneSettings(budget=4), candidates=cands,
                 prior=lambda frame: np.ones(len(frame)))
    assert "pow2_block_size_x" in cold.features and "pow2_block_size_x" not in warm.features


def test_mixed_features_are_the_raw_ones_plus_the_derived_quantities():
    cands = gemm_candidates()
    problem = {"m": 1024, "n": 1024, "k": 1024}
    mixed = mixed_tuning_features(problem)(cands)
    raw = param_features(cands)
    derived = kernel_tuning_features(problem)(cands)
    pd.testing.assert_frame_equal(mixed[list(raw.columns)], raw)
    assert [c for c in mixed.columns if c not in raw] == [c for c in derived.columns if is_derived_column(c)]
    assert "d_work_per_thread" in mixed and not any(is_derived_column(c) for c in raw.columns)
    # The raw part follows the Tuner's default: power-of-two columns only when asked (no prior).
    wide = pd.DataFrame({"MWG": [16, 24, 32, 48], "NWG": [16, 16, 32, 32], "MDIMC": 8, "NDIMC": 8, "KWG": 16, "SA": 0})
    assert "pow2_MWG" in mixed_tuning_features(problem, powers_of_two=True)(wide)
    assert "pow2_MWG" not in mixed_tuning_features(problem)(wide)


def test_alternate_members_read_the_derived_columns_only_from_even_members():
    cands = gemm_candidates()
    X = mixed_tuning_features({"m": 1024, "n": 1024, "k": 1024})(cands)
    y = np.log(work_per_thread_ms(cands))
    rng = np.random.default_rng(0)
    measured = rng.choice(len(cands), 32, replace=False)
    fits = {views: EnsembleSurrogate(n_members=4, seed=0, member_views=views).fit(X.iloc[measured], y[measured],
                                                                                  np.ones(32, bool))
            for views in ("alternate", "all")}
    # Scramble the derived columns: members that never saw them must answer exactly as before.
    scrambled = X.copy()
    derived = [c for c in X.columns if is_derived_column(c)]
    scrambled[derived] = X[derived].to_numpy()[rng.permutation(len(X))]
    for views, fit in fits.items():
        moved = ~np.isclose(fit.predict(X).members_log, fit.predict(scrambled).members_log).all(axis=1)
        assert moved.tolist() == ([True, False, True, False] if views == "alternate" else [True] * 4), views
    # Raw features alone: "alternate" has nothing to alternate, every member sees every column.
    raw = param_features(cands)
    assert EnsembleSurrogate(member_views="alternate").member_columns(list(raw.columns)) == [None] * 5


@pytest.mark.parametrize("make", [lambda: EnsembleSurrogate(member_views="half"),
                                  lambda: TuneSettings(budget=8, member_views="half")])
def test_an_unknown_member_view_is_a_one_line_error(make):
    with pytest.raises(InvalidInputError, match="member_views"):
        make()
