"""A fake engine: the real start / health / load / metrics / stop path against a scripted server.

It stands in for an engine binary in tests and demos (as replay stands in for hardware): its
knobs script the server's pace and its failures (see ``_fake_server.py``). Rows it produces
say ``engine="fake"``, so they never pass for measurements of a real engine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from perfpred.collect.serving._engine import Engine, Knob
from perfpred.collect.serving._models import LocalModel

_SERVER = Path(__file__).with_name("_fake_server.py")


class FakeEngine(Engine):
    name = "fake"
    default_startup_timeout_s = 10.0
    requests_counter = "fake:requests_total"
    output_tokens_counter = "fake:generation_tokens_total"
    prompt_tokens_counters = ("fake:prompt_tokens_total",)
    busy_gauges = ("fake:requests_running", "fake:requests_waiting")
    server_latency_means = (("server_tpot_mean_ms", "fake:time_per_output_token_seconds_sum",
                             "fake:time_per_output_token_seconds_count", 1e3),)
    knobs = (
        Knob("slots", int, 4, "requests decoded at once (the rest queue)", minimum=1, aliases=("max_num_seqs",)),
        Knob("token_ms", float, 2.0, "time per decode step", minimum=0.0),
        Knob("prefill_ms_per_token", float, 0.01, "prompt time per token", minimum=0.0),
        Knob("batch_penalty", float, 0.1, "step slow-down per extra running sequence", minimum=0.0),
        Knob("bunch", int, 1, "tokens flushed per streamed chunk", minimum=1),
        Knob("burst", bool, False, "hold every chunk of a response and send them together at its end"),
        Knob("startup_delay_s", float, 0.0, "sleep before listening", minimum=0.0),
        Knob("never_healthy", bool, False, "/health answers 503 forever"),
        Knob("exit_at_start", str, "", "print this and exit 1 at start"),
        Knob("oom_at_start", bool, False, "print an allocation failure and exit 1 at start"),
        Knob("die_after_requests", int, 0, "exit mid-stream in the request after this many (0: never)", minimum=0),
        Knob("http_500_every", int, 0, "answer HTTP 500 to every n-th request (0: never)", minimum=0),
        Knob("malformed_every", int, 0, "break the stream of every n-th request (0: never)", minimum=0),
        Knob("spawn_child", bool, False, "start a child process, as engines with workers do"),
        Knob("hang_on_sigterm", bool, False, "on SIGTERM stop listening and hold open streams (as llama-server "
                                              "does), exit on the second"),
    )

    def argv(self, knobs: dict[str, Any], model: LocalModel, port: int) -> list[str]:
        return [sys.executable, str(_SERVER), str(port), json.dumps(knobs, sort_keys=True)]

    def version(self) -> str:
        return "fake-1"

    def config_row(self, knobs: dict[str, Any]) -> dict[str, Any]:
        return {"engine": self.name, **knobs, "max_num_seqs": knobs["slots"]}
