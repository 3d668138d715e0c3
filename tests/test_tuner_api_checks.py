"""The tuner's library API refuses what it cannot tune, in one line, before measuring anything;
and tunes a replay (no candidates given) as ``perfpred tune --backend replay:PATH`` does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfpred.collect._replay import ReplayBackend
from perfpred.datasets import Measurement
from perfpred.errors import DatasetNotFoundError, InvalidInputError
from perfpred.settings import datasets_dir
from perfpred.tuner import Continuous, ParetoSettings, ParetoTuner, SearchSpace, Tuner, TuneSettings, tune_pareto


def assert_one_line(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


class Fake:
    """A backend that records every config it is asked to measure."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def measure(self, config):
        self.calls.append(dict(config))
        runtime = 1.0 + sum(abs(float(v)) for v in config.values())
        return Measurement(kind="kernel", workload={}, config=dict(config), hardware_id="fake",
                           runtime_ms=runtime, energy_j=runtime * 2.0, power_w=500.0, power_source="recorded")


SPACE = SearchSpace({"x": [1, 2, 3], "y": [0, 1]})


@pytest.fixture(scope="module")
def conv_dir() -> Path:
    try:
        return datasets_dir() / "kernel-tuner" / "convolution"
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def a100(conv_dir: Path) -> ReplayBackend:
    return ReplayBackend.from_file(conv_dir / "A100.json.gz")


# ---------------------------------------------------------------------------- 1. objective


def test_an_unknown_objective_is_refused_before_measuring(a100: ReplayBackend) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        TuneSettings(budget=4, objective="bogus")
    assert_one_line(excinfo, "'bogus'", "runtime_ms", "energy_j", "metric.NAME")
    for good in ("runtime_ms", "energy_j", "power_w", "metric.gflops"):
        assert TuneSettings(budget=4, objective=good).objective == good
    # A replay knows what it recorded: an objective it never recorded would spend the budget on Nones.
    a100.reset()
    with pytest.raises(InvalidInputError) as excinfo:
        Tuner(SearchSpace.from_kernel_tuner(a100.space()), a100, TuneSettings(budget=4, objective="power_w"))
    assert_one_line(excinfo, "'power_w'", "records")
    assert a100.n_evaluations == 0


# ---------------------------------------------------------------------------- 2. measured once


def test_repeated_candidate_rows_are_measured_once_in_their_first_order() -> None:
    backend = Fake()
    candidates = pd.DataFrame({"x": [1, 1, 1, 2, 2, 2], "y": [0, 0, 0, 1, 1, 1]})
    result = Tuner(SPACE, backend, TuneSettings(budget=6), candidates=candidates).run()
    keys = [tuple(sorted(c.items())) for c in backend.calls]
    assert len(keys) == len(set(keys)) == 2
    assert result.stopped_by == "space_exhausted"


def test_domain_values_that_compare_equal_are_refused() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace({"x": [1, 1.0, 2], "y": [0]})
    assert_one_line(excinfo, "'x'", "1 and 1.0", "twice")
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace({"x": [1, 2], "mode": ["a", "b", "a"]})
    assert_one_line(excinfo, "'mode'", "'a'", "twice")


# ---------------------------------------------------------------------------- 3. candidates in the space


def test_candidates_outside_the_space_are_refused_before_measuring() -> None:
    backend = Fake()
    with pytest.raises(InvalidInputError) as excinfo:
        Tuner(SPACE, backend, TuneSettings(budget=3), candidates=pd.DataFrame({"x": [2, 99, 98], "y": [0, 0, 0]})).run()
    assert_one_line(excinfo, "row 1", "x=99", "2 of 3 rows")
    constrained = SearchSpace({"x": [1, 2, 3], "y": [0, 1]}, ["x > 1"])
    with pytest.raises(InvalidInputError) as excinfo:
        Tuner(constrained, backend, TuneSettings(budget=3), candidates=pd.DataFrame({"x": [1, 2], "y": [0, 0]}))
    assert_one_line(excinfo, "row 0", "constraints", "1 of 2 rows")
    with pytest.raises(InvalidInputError) as excinfo:
        tune_pareto(SPACE, backend, ["runtime_ms", "energy_j"], budget=3,
                    candidates=pd.DataFrame({"x": [99], "y": [0]}))
    assert_one_line(excinfo, "row 0", "x=99")
    assert backend.calls == []


# ---------------------------------------------------------------------------- 4. pareto settings up front


def test_tune_pareto_checks_the_reference_point_before_measuring() -> None:
    backend = Fake()
    with pytest.raises(InvalidInputError) as excinfo:
        tune_pareto(SPACE, backend, ["runtime_ms", "energy_j"], budget=4, reference_point=[1.0])
    assert_one_line(excinfo, "reference_point", "(2)", "[1.0]")
    with pytest.raises(InvalidInputError):
        tune_pareto(SPACE, backend, ["runtime_ms", "energy_j"], budget=4, reference_point=["a", "b"])
    assert backend.calls == []
    result = tune_pareto(SPACE, backend, ["runtime_ms", "energy_j"], budget=4, reference_point=[100.0, 200.0])
    assert result.reference_point == [100.0, 200.0] and len(backend.calls) == 4


# ---------------------------------------------------------------------------- 5. a replay without candidates


def test_a_replay_without_candidates_tunes_its_recorded_configs_as_the_cli_does(conv_dir: Path,
                                                                                 a100: ReplayBackend) -> None:
    from perfpred.tuner._session import open_session

    space = SearchSpace.from_kernel_tuner(a100.space())
    assert space.cartesian_size() > len(a100)  # the cartesian space holds configs never recorded
    a100.reset()
    result = Tuner(space, a100, TuneSettings(budget=8)).run()
    assert result.n_evaluations == 8 and result.best_value is not None
    session = open_session(f"replay:{conv_dir / 'A100.json.gz'}")
    session.backend.reset()
    cli = Tuner(session.space, session.backend, TuneSettings(budget=8), candidates=session.candidates).run()
    assert result.history[space.names].equals(cli.history[space.names])
    a100.reset()
    pareto = tune_pareto(space, a100, ["runtime_ms", "metric.compile_time_ms"], budget=4)
    assert pareto.n_evaluations == 4
    # A space narrower than the recording searches the recorded configs inside it.
    narrow = SearchSpace({**space.params, "use_shmem": [1]})
    a100.reset()
    Tuner(narrow, a100, TuneSettings(budget=4)).run()
    assert {config["use_shmem"] for config, _ in a100.history} == {1}
    # A backend that cannot list what it recorded still has the space enumerated.
    backend = Fake()
    assert Tuner(SPACE, backend, TuneSettings(budget=6)).run().n_evaluations == 6
    assert len({tuple(sorted(c.items())) for c in backend.calls}) == 6


# ---------------------------------------------------------------------------- 6. priors


def test_a_fitted_performance_model_is_a_prior_on_a_replay(conv_dir: Path, a100: ReplayBackend) -> None:
    from perfpred.models import PerformanceModel

    source = ReplayBackend.from_file(conv_dir / "A4000.json.gz")
    rows = source.table[source.table["status"] == "ok"].sample(300, random_state=0)
    model = PerformanceModel(kind="kernel", regressor="xgb").fit(rows)
    space = SearchSpace.from_kernel_tuner(a100.space())
    a100.reset()
    result = Tuner(space, a100, TuneSettings(budget=4), prior=model).run()
    assert result.n_evaluations == 4
    a100.reset()
    assert Tuner(space, a100, TuneSettings(budget=4), prior={"a4000": model}).run().n_evaluations == 4
    with pytest.raises(InvalidInputError) as excinfo:  # no Measurement rows to predict from
        Tuner(SPACE, Fake(), TuneSettings(budget=4), prior=model)
    assert_one_line(excinfo, "PerformanceModel", "function")
    with pytest.raises(InvalidInputError) as excinfo:
        Tuner(space, a100, TuneSettings(budget=4), prior=PerformanceModel(kind="kernel"))
    assert_one_line(excinfo, "fitted")


def test_an_empty_or_uncallable_prior_is_refused() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        Tuner(SPACE, Fake(), TuneSettings(budget=4), prior={})
    assert_one_line(excinfo, "`prior`", "empty")
    with pytest.raises(InvalidInputError) as excinfo:
        Tuner(SPACE, Fake(), TuneSettings(budget=4), prior={"a": 3})
    assert_one_line(excinfo, "prior 'a'", "function", "int")


# ---------------------------------------------------------------------------- 7. reserved names


@pytest.mark.parametrize("name", ["value", "status", "predicted", "iteration", "elapsed_s", "worker", "trial"])
def test_parameters_named_like_history_columns_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace({name: [1, 2, 3], "y": [0, 1]})
    assert_one_line(excinfo, repr(name), "history")


def test_parameters_named_like_a_pareto_runs_metrics_are_refused() -> None:
    backend = Fake()
    space = SearchSpace({"runtime_ms": [1, 2], "y": [0, 1]})
    with pytest.raises(InvalidInputError) as excinfo:
        tune_pareto(space, backend, ["runtime_ms", "energy_j"], budget=2)
    assert_one_line(excinfo, "['runtime_ms']", "metric")
    assert backend.calls == []
    history = Tuner(SearchSpace({"x": [1, 2, 3], "y": [0, 1]}), Fake(), TuneSettings(budget=2)).run().history
    assert history[["x", "y", "value", "status"]].notna().all().all()


# ---------------------------------------------------------------------------- 8. setting types


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"budget": 2.5}, "budget=2.5"), ({"budget": "4"}, "budget='4'"), ({"budget": True}, "budget=True"),
    ({"budget": 4, "seed": None}, "seed=None"), ({"budget": 4, "seed": "x"}, "seed='x'"),
    ({"budget": 4, "seed": -1}, "seed >= 0"), ({"budget": 4, "batch_size": 1.5}, "batch_size=1.5"),
    ({"budget": 4, "kappa": "1"}, "kappa='1'"),
])
def test_settings_of_the_wrong_type_are_one_line_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        TuneSettings(**kwargs)
    assert_one_line(excinfo, fragment)
    with pytest.raises(InvalidInputError) as excinfo:
        ParetoSettings(objectives=("runtime_ms",), **kwargs)
    assert_one_line(excinfo, fragment)


def test_tuners_refuse_settings_of_another_type() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        Tuner(SPACE, Fake(), {"budget": 4})
    assert_one_line(excinfo, "TuneSettings", "dict")
    with pytest.raises(InvalidInputError) as excinfo:
        ParetoTuner(SPACE, Fake(), TuneSettings(budget=4))
    assert_one_line(excinfo, "ParetoSettings", "TuneSettings")
    with pytest.raises(InvalidInputError) as excinfo:
        tune_pareto(SPACE, Fake(), ["runtime_ms"], budget=2.5)
    assert_one_line(excinfo, "budget=2.5")
    with pytest.raises(InvalidInputError) as excinfo:
        Tuner({"x": [1, 2]}, Fake(), TuneSettings(budget=4))
    assert_one_line(excinfo, "SearchSpace", "dict")


# ---------------------------------------------------------------------------- 9. space definitions


def test_kernel_tuner_restrictions_read_as_kernel_tuner_reads_them() -> None:
    tune_params = {"x": [1, 2, 3], "y": [1, 2]}
    one_string = SearchSpace.from_kernel_tuner(tune_params, "x>1")
    assert one_string.constraints == ["x>1"]
    assert one_string.enumerate().to_dict("records") == [{"x": x, "y": y} for x in (2, 3) for y in (1, 2)]
    both = SearchSpace.from_kernel_tuner(tune_params, [lambda p: p["x"] > 1 and p["y"] < 2])
    assert both.enumerate().to_dict("records") == [{"x": 2, "y": 1}, {"x": 3, "y": 1}]
    seen = []
    SearchSpace.from_kernel_tuner(tune_params, lambda p: seen.append(p) or True).enumerate()
    assert seen and all(type(p) is dict for p in seen)
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace.from_kernel_tuner({"x": 4})
    assert_one_line(excinfo, "list of values", "x=4")
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace.from_kernel_tuner({"x": "abc"})
    assert_one_line(excinfo, "list of values")


def test_yaml_spaces_read_numbers_and_refuse_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  v: [1e3, 2e3]\n  x: [1, 2]\n  lr: {low: 1e-4, high: 1, log: true}\n")
    space = SearchSpace.from_yaml(path)
    assert space.params["v"] == [1000.0, 2000.0] and space.params["x"] == [1, 2]
    assert space.params["lr"] == Continuous(1e-4, 1.0, log=True)
    for name, text, fragment in [("empty.yaml", "", "nothing"), ("broken.yaml", "params: {x: [1, 2\n", "YAML"),
                                 ("list.yaml", "- 1\n", "list")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(InvalidInputError) as excinfo:
            SearchSpace.from_yaml(tmp_path / name)
        assert_one_line(excinfo, name, fragment)
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace.from_yaml(tmp_path / "missing.yaml")
    assert_one_line(excinfo, "missing.yaml")
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace.from_dict(None)
    assert_one_line(excinfo, "mapping", "NoneType")
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace.from_dict({"params": {"x": {"low": 0, "high": 1, "log": "false"}}})
    assert_one_line(excinfo, "'x'", "log", "'false'")


def test_ranges_and_samples_refuse_what_they_cannot_hold() -> None:
    for low, high in [("a", "b"), (float("nan"), 1.0), (0.0, float("inf"))]:
        with pytest.raises(InvalidInputError) as excinfo:
            Continuous(low, high)
        assert_one_line(excinfo, "finite number")
    with pytest.raises(InvalidInputError) as excinfo:
        Continuous(0.2, 0.8, integer=True)
    assert_one_line(excinfo, "integer", "low=0.2")
    with pytest.raises(InvalidInputError) as excinfo:
        Continuous(0.0, 1.0, log="false")
    assert_one_line(excinfo, "log")
    frame = SearchSpace({"n": Continuous(0.5, 3.5, integer=True)}).sample(16)
    assert frame["n"].between(1, 3).all()
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace({"x": [1, 2, 3]}).sample(-1)
    assert_one_line(excinfo, "n >= 0", "n=-1")
    integer = SearchSpace({"x": Continuous(1, 10, integer=True)})
    integer.check_config({"x": 3})
    with pytest.raises(InvalidInputError) as excinfo:
        integer.check_config({"x": 3.5})
    assert_one_line(excinfo, "integer", "x=3.5")
    assert not integer.in_domains(pd.DataFrame({"x": [3.5]}))[0]
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace({"x": Continuous(1, 10)}).check_config({"x": "a"})
    assert_one_line(excinfo, "number", "x='a'")


def test_the_public_entry_points_have_docstrings() -> None:
    for fn in (Tuner.run, SearchSpace.from_kernel_tuner, SearchSpace.from_yaml, SearchSpace.is_valid):
        assert fn.__doc__ and len(fn.__doc__.split()) >= 8, fn


# ---------------------------------------------------------------------------- 10. replay seed


def test_replay_seed_must_be_an_integer(a100: ReplayBackend) -> None:
    for seed in ("a", 1.5, None, -1):
        with pytest.raises(InvalidInputError) as excinfo:
            ReplayBackend(a100.table, seed=seed)
        assert_one_line(excinfo, "seed", repr(seed))
    assert np.isfinite(ReplayBackend(a100.table, seed=np.int64(3), resample_noise=True).optimum().runtime_ms)
