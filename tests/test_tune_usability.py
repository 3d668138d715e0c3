"""`perfpred tune` and `tune-serving` after a usability pass: a resumed study says when it was seeded
otherwise, default study names are the recording's, a live tune keeps its measurements in a store, a
Pareto table never breaks a number, one objective is reported as one, and the serving tuner's load
is told apart from `collect serving`'s."""

from __future__ import annotations

import inspect
import json
import re

import optuna
import pandas as pd
import pytest
from test_cli import assert_one_line_error, run_main
from test_tune_cli_fixes import _space
from test_tune_cli_safety import _replay
from test_tune_serving_replay_cli import use_small_replay
from typer.testing import CliRunner

from perfpred._console import console
from perfpred.cli import _fitted_widths, app

DEDISPERSION = "kernel-tuner/dedispersion/{}.json.gz"
runner = CliRunner()


def _tune(monkeypatch, capsys, backend: str, out, *extra: str) -> tuple[int, str, str]:
    return run_main(monkeypatch, capsys, "tune", "--backend", backend, "--output", str(out), *extra)


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0, result.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


# ---------------------------------------------------------------------------- 1. --seed of a resumed study


@pytest.mark.parametrize("objectives", [[], ["--objective", "runtime_ms", "--objective", "metric.compile_time_ms"]],
                         ids=["single", "pareto"])
def test_resuming_a_study_with_another_seed_warns_in_one_line(monkeypatch, capsys, tmp_path, objectives):
    out = tmp_path / "run"
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "4", *objectives)
    assert code == 0, err
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "4", "--seed", "5", *objectives)
    assert code == 0, err
    (line,) = _warnings(err)
    assert "4 evaluation(s) picked with --seed 0" in line and "--seed 5 only picks the configs this run adds" in line
    assert "use another --study or --output" in line  # no --storage: either starts afresh
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "6", *objectives)  # seed 0 again
    assert code == 0, err
    assert not _warnings(err)


# ---------------------------------------------------------------------------- 2. default study names


def test_recordings_sharing_a_file_name_get_a_study_each_in_one_storage(monkeypatch, capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    conv, dedisp = _replay("A100"), _replay("A100", DEDISPERSION)
    for backend, out in ((conv, "conv"), (dedisp, "dedisp")):
        code, _, err = _tune(monkeypatch, capsys, backend, tmp_path / out, "--budget", "4", "--storage", url)
        assert code == 0, err
    names = optuna.get_all_study_names(url)
    assert len(names) == 2 and all(n.startswith("perfpred-tune-replay-a100-json-gz-") for n in names)
    code, _, err = _tune(monkeypatch, capsys, conv, tmp_path / "conv", "--budget", "6", "--storage", url)
    assert code == 0, err
    assert sorted(optuna.get_all_study_names(url)) == sorted(names)  # resumed, not a third study
    assert json.loads((tmp_path / "conv" / "result.json").read_text())["n_evaluations_this_run"] == 2


def test_a_study_under_the_earlier_default_name_is_still_resumed(monkeypatch, capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = "perfpred-tune-replay-a4000-json-gz"  # the default name before it told recordings apart
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), tmp_path / "a", "--budget", "4", "--storage", url,
                         "--study", old)
    assert code == 0, err
    # As an earlier perfpred recorded it: no hardware or problem, nothing that finds it by identity.
    study = optuna.load_study(study_name=old, storage=url)
    identity = study.user_attrs["perfpred_identity"]
    study.set_user_attr("perfpred_identity", {k: v for k, v in identity.items()
                                              if k not in ("hardware", "workload") and not k.startswith("space.")})
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), tmp_path / "b", "--budget", "6", "--storage", url)
    assert code == 0, err
    assert optuna.get_all_study_names(url) == [old]
    assert json.loads((tmp_path / "b" / "result.json").read_text())["n_evaluations_this_run"] == 2


def test_a_refusal_under_storage_names_only_the_study_as_the_way_out(monkeypatch, capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), tmp_path / "a", "--budget", "4", "--storage", url)
    assert code == 0, err
    code, stdout, err = _tune(monkeypatch, capsys, _replay("A4000"), tmp_path / "b", "--budget", "6", "--storage",
                              url, "--space", _space(tmp_path))
    assert_one_line_error(code, stdout, err, "tunes block_size_x in", "use another --study")
    assert "--output" not in err  # another --output shares the same --storage
    code, stdout, err = _tune(monkeypatch, capsys, _replay("A4000"), tmp_path / "a", "--budget", "4", "--storage", url)
    assert code == 0, err
    assert "another --study starts afresh" in " ".join(stdout.split()) and "--output starts" not in stdout


# ---------------------------------------------------------------------------- 3. a live tune's store


def test_a_live_tune_appends_every_measurement_to_its_store(monkeypatch, capsys, tmp_path):
    from perfpred.datasets import MeasurementStore

    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, "kernel:sgemm:test", out, "--budget", "2")
    assert code == 0, err
    rows = MeasurementStore(out / "store").load()
    assert len(rows) == 2 and set(rows["kind"]) == {"kernel"} and "config.block_m" in rows
    assert not any(c.startswith("metric.demo_") for c in rows)  # as `collect kernel` stores them, untagged
    history = pd.read_csv(out / "history.csv")
    assert sorted(rows["config.block_m"]) == sorted(history["block_m"])
    assert f"2 row(s) appended to the store {out / 'store'}" in " ".join(stdout.split())


def test_store_is_refused_with_a_replay_before_anything_is_written(monkeypatch, capsys, tmp_path):
    code, stdout, err = _tune(monkeypatch, capsys, _replay("A4000"), tmp_path / "run", "--budget", "4",
                              "--store", str(tmp_path / "store"))
    assert_one_line_error(code, stdout, err, "--store", "measures nothing new")
    assert not (tmp_path / "store").exists() and not (tmp_path / "run").exists()
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), tmp_path / "run", "--budget", "4")
    assert code == 0, err
    assert not (tmp_path / "run" / "store").exists()


# ---------------------------------------------------------------------------- 4. the Pareto table


def test_pareto_numbers_never_wrap_at_80_columns(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(console, "_width", 80)
    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "16", "--objective",
                              "runtime_ms", "--objective", "metric.compile_time_ms", "--constraint",
                              "runtime_ms <= 5")
    assert code == 0, err
    front = pd.read_csv(out / "front.csv")
    body = [line for line in stdout.splitlines() if line.startswith("│")]
    assert len(body) == len(front)  # one line a config: no cell went on to a second line
    for line, runtime in zip(body, front["runtime_ms"], strict=True):
        assert f"{runtime:.4g}" in [cell.strip() for cell in line.split("│")]
        assert len(line) <= 80
    assert "configs on the front of 16 evaluations" in stdout


def test_fitted_widths_fold_headers_and_keep_numbers_whole():
    headers = ["block_size_x", "metric.compile_time_ms", "isa"]
    cells = [["256", "2578", "avx2"], ["16", "833.7", "sse2"]]
    widths = _fitted_widths(headers, cells, [True, True, False], 30)
    assert sum(widths) + 3 * len(widths) + 1 <= 30 and widths[0] >= 3 and widths[1] >= 5
    assert _fitted_widths(headers, cells, [True, True, False], 200) == [12, 22, 4]
    assert _fitted_widths(headers, cells, [True, True, False], 5)[:2] == [3, 5]  # never below a number


# ---------------------------------------------------------------------------- 5. tune-serving's kappa and one objective


def test_tune_serving_kappa_help_tells_both_defaults_and_they_hold():
    from perfpred.tuner._pareto_loop import ParetoSettings
    from perfpred.tuner._serving_live import tune_serving_live

    text = _help("tune-serving")
    kappa = text.split("--kappa", 1)[1].split("--output", 1)[0]
    assert "[default: 0.5]" not in kappa and "default 0.5 for live engines, 1.0 with --engine ml-energy" in kappa
    assert inspect.signature(tune_serving_live).parameters["kappa"].default == 0.5
    assert ParetoSettings.__dataclass_fields__["kappa"].default == 1.0


def test_live_tune_serving_leaves_kappa_to_the_search_unless_given(monkeypatch, capsys, tmp_path):
    import perfpred.tuner
    from perfpred.errors import InvalidInputError

    seen: list[dict] = []

    def fake(*args, **kwargs):
        seen.append(kwargs)
        raise InvalidInputError("stopped before launching")

    monkeypatch.setattr(perfpred.tuner, "tune_serving_live", fake)
    for extra in ([], ["--kappa", "0.2"]):
        code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--output", str(tmp_path / "run"), "--store",
                                  str(tmp_path / "store"), *extra)
        assert_one_line_error(code, out, err, "stopped before launching")
    assert "kappa" not in seen[0] and seen[1]["kappa"] == 0.2


@pytest.fixture
def ml_energy(monkeypatch, lm_arena_table):
    """The ML.ENERGY replay on lm-arena-chat with a small predictor (tests/test_tune_serving_replay_cli.py's)."""
    use_small_replay(monkeypatch, lm_arena_table)


def test_one_objective_on_ml_energy_is_reported_as_one(monkeypatch, capsys, tmp_path, ml_energy):
    out = tmp_path / "run"
    code, stdout, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "ml-energy", "--model",
                                 "Qwen/Qwen3-8B", "--budget", "3", "--output", str(out))
    assert code == 0, err
    text = " ".join(stdout.split())
    assert "(the best config of 3 evaluations)" in text and "config(s)" not in text
    assert f"report: {out / 'result.json'}" in text and not (out / "pareto.json").exists()
    report = json.loads((out / "result.json").read_text())
    assert "hypervolume" not in report and "reference_point" not in report
    assert report["best_value"] == pytest.approx(max(r["metric.output_tokens_per_s"] for r in report["front"]))
    code, stdout, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "ml-energy", "--model",
                                 "Qwen/Qwen3-8B", "--budget", "3", "--output", str(tmp_path / "two"), "--objective",
                                 "metric.output_tokens_per_s:max", "--objective", "metric.itl_p99_ms:min")
    assert code == 0, err
    report = json.loads((tmp_path / "two" / "pareto.json").read_text())
    assert "hypervolume" in report and not (tmp_path / "two" / "result.json").exists()
    assert re.search(r"\(\d+ configs? on the front of 3 evaluations\)", " ".join(stdout.split()))


# ---------------------------------------------------------------------------- 6. --compare-random


def test_compare_random_is_marked_deprecated_and_still_compares(monkeypatch, capsys, tmp_path):
    text = _help("tune")
    assert "--compare-random" in text
    assert "Deprecated: the same as --compare random" in text.split("--compare-random", 1)[1][:200]
    out = tmp_path / "run"
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "4", "--compare-random")
    assert code == 0, err
    assert "--compare-random is deprecated: use --compare random" in err
    assert len(json.loads((out / "result.json").read_text())["comparisons"]["random"]) == 4


# ---------------------------------------------------------------------------- 7. the serving loads


def test_tune_serving_help_states_collect_servings_other_default_load():
    import typer.main

    from perfpred.tuner._serving_live import default_workload

    collect = typer.main.get_command(app).commands["collect"].commands["serving"]
    collected = {p.name: p.default for p in collect.params}
    helps = {p.name: p.help for p in collect.params}
    assert collected["concurrency"] is None and "(default 8 unless --rate-rps)" in helps["concurrency"]
    tuned = default_workload("throughput")
    text = _help("tune-serving")
    for option, ours, theirs in (("--concurrency", tuned.concurrency, 8), ("--requests", tuned.n_requests,
                                                                           collected["requests"]),
                                 ("--prompt-tokens", tuned.prompt.value, collected["prompt_tokens"]),
                                 ("--output-tokens", tuned.output.value, collected["output_tokens"])):
        said = text.split(f"{option} ", 1)[1][:400]
        assert f"default {ours}, where perfpred collect serving defaults to {theirs}" in said.replace("`", ""), said


def _serving_rows(n: int, concurrency: float, requests: float, prompt: float, output: float) -> pd.DataFrame:
    return pd.DataFrame({"kind": ["serving"] * n, "status": ["ok"] * n, "workload.concurrency": [concurrency] * n,
                         "workload.n_requests": [requests] * n, "workload.prompt_tokens_mean": [prompt] * n,
                         "workload.output_tokens_mean": [output] * n})


def test_a_prior_measured_under_another_load_is_warned_of():
    from perfpred.tuner._serving_live import default_workload
    from perfpred.tuner._serving_prior import prior_load_warning

    load = default_workload("throughput")
    other = _serving_rows(6, 8, 32, 64, 32)  # `perfpred collect serving`'s defaults
    note = prior_load_warning(other, load)
    assert note and "none of its 6 serving rows was measured under this run's load (concurrency 16, 48 requests, " \
                     "128 prompt / 24 output tokens)" in note
    assert "most were measured under concurrency 8, 32 requests, 64 prompt / 32 output tokens" in note
    assert "--concurrency 16 --requests 48 --prompt-tokens 128 --output-tokens 24" in note
    assert prior_load_warning(pd.concat([other, _serving_rows(2, 16, 48, 128, 24)]), load) is None
    # A rate search compares the request lengths only.
    assert prior_load_warning(_serving_rows(3, 4, 10, 128, 16), default_workload("sustainable_rate"),
                              "sustainable_rate") is None


def test_tune_serving_warns_of_a_priors_load_before_launching(monkeypatch, capsys, tmp_path):
    import perfpred.tuner
    from perfpred.datasets import Measurement, MeasurementStore
    from perfpred.errors import InvalidInputError

    store = MeasurementStore(tmp_path / "prior", create=True)
    store.append([Measurement(kind="serving", hardware_id="cpu-test-0000000001", config={"parallel": p},
                              workload={"model": "tiny", "concurrency": 8, "n_requests": 32, "prompt_tokens_mean": 64,
                                        "output_tokens_mean": 32},
                              metrics={"output_tokens_per_s": 100.0 * p}) for p in (1, 2, 4, 8, 16)])

    def fake(*args, **kwargs):
        raise InvalidInputError("stopped before launching")

    monkeypatch.setattr(perfpred.tuner, "tune_serving_live", fake)
    code, _, err = run_main(monkeypatch, capsys, "tune-serving", "--output", str(tmp_path / "run"), "--store",
                            str(tmp_path / "store"), "--prior", str(tmp_path / "prior"))
    assert code == 2
    (line,) = _warnings(err)
    assert f"--prior {tmp_path / 'prior'}: none of its 5 serving rows" in line and "concurrency 8" in line
