"""``perfpred tune-serving --engine ml-energy`` from the command line: what it takes, what it answers.

The recorded table is read once per module (lm-arena-chat only) and the leave-one-model-out prior
is a small regressor without cross-validation, so each run takes a second or two.
"""

from __future__ import annotations

import json

import pytest

from tests.test_cli import assert_one_line_error, run_main

MODEL = "Qwen/Qwen3-8B"
MOE = "Qwen/Qwen3-30B-A3B-Instruct-2507"  # its lowest recorded p99 ITL on lm-arena-chat: 10.4 ms


def use_small_replay(monkeypatch, table) -> None:
    """``tune-serving --engine ml-energy`` replays ``table`` with a small predictor (20 trees, no CV)."""
    import perfpred.tuner
    from perfpred.tuner import _serving_replay

    def small_lomo(table, held_out_model, metrics, regressor=None, cv_folds=4):
        train = table[table["workload.model"] != held_out_model]
        return _serving_replay.ServingPredictor(metrics, _serving_replay.serving_regressor(20), cv_folds=0).fit(train)

    monkeypatch.setattr(perfpred.tuner, "load_serving_table", lambda paths=None: table)
    monkeypatch.setattr(_serving_replay, "lomo_predictor", small_lomo)


@pytest.fixture(autouse=True)
def fast_replay(monkeypatch, lm_arena_table):
    use_small_replay(monkeypatch, lm_arena_table)


def tune(monkeypatch, capsys, out, *args):
    return run_main(monkeypatch, capsys, "tune-serving", "--engine", "ml-energy", "--output", str(out), *args)


@pytest.mark.parametrize(("args", "needles"), [
    (["--slo-tpot-ms", "30"], ["--slo-tpot-ms 30", "--constraint 'metric.itl_p99_ms <= 30'"]),
    (["--slo-ttft-ms", "300"], ["--slo-ttft-ms 300", "no time to first token"]),
    (["--slo-e2e-ms", "900"], ["--slo-e2e-ms 900", "no end-to-end latency"]),
    (["--surrogate", "xgb"], ["--surrogate xgb", "live engines"]),
    (["--confirm", "2"], ["--confirm 2", "nothing to confirm"]),
    (["--confirm-top", "2"], ["--confirm-top 2", "nothing to confirm"]),
    (["--prior", "earlier-store"], ["--prior earlier-store", "other recorded models"]),
    (["--store", "some-store"], ["--store some-store", "nothing is stored"]),
    (["--probe-s", "3"], ["--probe-s 3", "no rate search"]),
    (["--goal", "goodput"], ["--goal goodput", "throughput or tokens_per_joule"]),
    (["--goal", "throughput", "--objective", "power_w"], ["--goal throughput", "--objective power_w"]),
])
def test_live_only_options_are_refused_with_what_to_use_instead(monkeypatch, capsys, tmp_path, args, needles):
    code, out, err = tune(monkeypatch, capsys, tmp_path / "run", "--model", MODEL, "--budget", "2", *args)
    assert_one_line_error(code, out, err, *needles)
    assert not (tmp_path / "run").exists()  # refused before any replayed launch


def test_goal_maps_to_the_recorded_metric_and_kappa_and_storage_reach_the_search(monkeypatch, capsys, tmp_path):
    import perfpred.tuner

    seen = {}
    real = perfpred.tuner.tune_serving

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(perfpred.tuner, "tune_serving", spy)
    db = tmp_path / "study.db"
    code, _out, err = tune(monkeypatch, capsys, tmp_path / "run", "--model", MODEL, "--budget", "2", "--goal",
                          "tokens_per_joule", "--kappa", "0.2", "--storage", f"sqlite:///{db}")
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "result.json").read_text())  # one objective: pareto.json is for 2+
    assert report["objectives"] == ["metric.energy_per_token_j:minimize"]  # tokens per joule = 1 / this
    assert seen["kappa"] == 0.2 and db.is_file()


def test_the_answer_is_a_vllm_command_printed_and_stored_per_front_config(monkeypatch, capsys, tmp_path):
    code, out, err = tune(monkeypatch, capsys, tmp_path / "run", "--model", MOE, "--budget", "3",
                          "--objective", "metric.output_tokens_per_s:max", "--objective", "metric.itl_p99_ms:min")
    assert code == 0, err
    front = json.loads((tmp_path / "run" / "pareto.json").read_text())["front"]
    assert front and all(row["command"].startswith(f"vllm serve {MOE} --max-num-seqs {row['max_num_seqs']} ")
                         for row in front)
    assert all(row["command"] in out for row in front)
    assert f"plot: {tmp_path / 'run' / 'pareto.png'}" in out and (tmp_path / "run" / "pareto.png").is_file()


def test_vllm_commands_spell_the_parallelism_as_vllm_does():
    from perfpred.collect.serving._vllm import serve_command

    row = {"max_num_seqs": 8, "tensor_parallel": 1, "expert_parallel": 1, "data_parallel": 1, "num_gpus": 1}
    assert serve_command("m", row) == "vllm serve m --max-num-seqs 8 --tensor-parallel-size 1"
    # vLLM's expert-parallel group is TP x DP: EP over 8 GPUs is TP 8 with EP enabled.
    assert (serve_command("m", {**row, "expert_parallel": 8, "num_gpus": 8})
            == "vllm serve m --max-num-seqs 8 --tensor-parallel-size 8 --enable-expert-parallel")
    assert (serve_command("m", {**row, "tensor_parallel": 2, "data_parallel": 2, "num_gpus": 4})
            == "vllm serve m --max-num-seqs 8 --tensor-parallel-size 2 --data-parallel-size 2")


def test_an_impossible_constraint_is_warned_of_before_and_fails_after(monkeypatch, capsys, tmp_path):
    code, out, err = tune(monkeypatch, capsys, tmp_path / "run", "--model", MOE, "--budget", "3",
                          "--constraint", "metric.itl_p99_ms <= 5")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}\n{out}\n{err}"
    assert lines[0].startswith("warning:") and "prior predicts" in lines[0] and "metric.itl_p99_ms <= 5" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("error: no replayed config met metric.itl_p99_ms <= 5 in 3")
    assert "nearest measured: metric.itl_p99_ms" in lines[1]
    assert (tmp_path / "run" / "history.csv").is_file()  # the launches it spent are kept


def test_one_objective_reports_its_best_value_and_no_plot(monkeypatch, capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "pareto.png").write_bytes(b"an earlier two-objective run's plot")
    code, out, err = tune(monkeypatch, capsys, run, "--model", MODEL, "--budget", "2")
    assert code == 0, err
    assert not (run / "pareto.png").exists()  # one objective: its best so far is the plot
    assert f"plot: {run / 'best_so_far.png'}" in out and (run / "best_so_far.png").is_file()
    assert "hypervolume" not in out and "tokens/s" in out.split("; best ", 1)[1].splitlines()[0]


def test_metric_names_take_either_spelling(monkeypatch, capsys, tmp_path):
    code, out, err = tune(monkeypatch, capsys, tmp_path / "run", "--model", MODEL, "--budget", "2",
                          "--objective", "metric.power_w:min", "--constraint", "itl_p99_ms <= 60")
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "result.json").read_text())
    assert report["objectives"] == ["power_w:minimize"] and report["constraints"] == ["metric.itl_p99_ms <= 60"]
    code, out, err = tune(monkeypatch, capsys, tmp_path / "other", "--model", MODEL, "--budget", "2",
                          "--objective", "metric.ttft_p99_ms")
    assert_one_line_error(code, out, err, "metric.ttft_p99_ms", "'metric.itl_p99_ms'", "'power_w'")


def test_a_live_engine_refuses_a_recorded_task(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "llama-server", "--task", "gpqa",
                              "--output", str(tmp_path / "run"))
    assert_one_line_error(code, out, err, "--task gpqa", "--prompt-tokens")
