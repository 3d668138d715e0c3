"""A fake OpenAI-compatible completions server (standard library only) that misbehaves on request.

Started by :class:`perfpred.collect.serving.FakeEngine` as ``python _fake_server.py PORT JSON``
(by path, so no package is imported and it is up in ~50 ms). It streams ``/v1/completions``
like llama-server and vLLM do (``data: {...}`` chunks, a usage chunk, ``data: [DONE]``),
serves ``/health`` and Prometheus ``/metrics``, and can be told to start slowly, never
become healthy, exit or "run out of memory" at start, die mid-run, answer HTTP 500, send a
malformed chunk, flush tokens in bunches (or a whole response in one burst), spawn a child
process (for the orphan tests), or, like llama-server, answer SIGTERM by closing its port and
holding the open streams without a token until a second SIGTERM.
It generates ``max_tokens`` tokens at ``token_ms`` per decode step; ``slots`` requests decode
at once and the rest queue, and each step slows by ``batch_penalty`` per extra sequence. Like
vLLM, it times each request's pace per token after the first itself (a Prometheus histogram's
``_sum`` and ``_count``), which a burst does not change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULTS = {"token_ms": 2.0, "prefill_ms_per_token": 0.01, "bunch": 1, "burst": False, "slots": 4,
            "batch_penalty": 0.1, "startup_delay_s": 0.0, "never_healthy": False, "exit_at_start": "",
            "oom_at_start": False, "die_after_requests": 0, "http_500_every": 0, "malformed_every": 0,
            "spawn_child": False, "hang_on_sigterm": False}


class _State:
    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(max(1, int(cfg["slots"])))
        self.active = 0
        self.waiting = 0  # for a slot
        self.requests = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.tpot_s_sum = 0.0  # the server's own pace per token after the first, summed over requests
        self.tpot_count = 0
        self.hanging = False  # after a SIGTERM with hang_on_sigterm: no token is sent any more


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    cfg = state.cfg

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection; the body ends when the socket closes

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, code: int, body: str, ctype: str = "application/json") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                if cfg["never_healthy"]:
                    self._send(503, '{"error": {"message": "Loading model"}}')
                else:
                    self._send(200, '{"status": "ok"}')
            elif self.path == "/metrics":
                with state.lock:
                    text = (f"# TYPE fake:requests_total counter\nfake:requests_total {state.requests}\n"
                            f"fake:prompt_tokens_total {state.prompt_tokens}\n"
                            f"fake:generation_tokens_total {state.generation_tokens}\n"
                            f"fake:requests_running {state.active}\nfake:requests_waiting {state.waiting}\n"
                            f"fake:time_per_output_token_seconds_sum {state.tpot_s_sum}\n"
                            f"fake:time_per_output_token_seconds_count {state.tpot_count}\n")
                self._send(200, text, "text/plain; version=0.0.4")
            else:
                self._send(404, '{"error": "not found"}')

        def _chunk(self, obj: object, held: list[bytes] | None = None) -> None:
            data = b"data: " + json.dumps(obj).encode() + b"\n\n"
            if held is not None:  # a burst: kept until the response is complete
                held.append(data)
                return
            self.wfile.write(data)
            self.wfile.flush()

        def do_POST(self) -> None:
            if self.path != "/v1/completions":
                self._send(404, '{"error": "not found"}')
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            prompt = body.get("prompt") or []
            n_prompt = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
            n_out = int(body.get("max_tokens") or 16)
            with state.lock:
                state.requests += 1
                number = state.requests
            if cfg["http_500_every"] and number % cfg["http_500_every"] == 0:
                self._send(500, '{"error": {"message": "internal error (scripted)", "code": 500}}')
                return
            die = cfg["die_after_requests"] and number > cfg["die_after_requests"]
            with state.lock:
                state.waiting += 1
            with state.slots:
                with state.lock:
                    state.waiting -= 1
                    state.active += 1
                    state.prompt_tokens += n_prompt
                try:
                    self._stream(n_prompt, n_out, number, die)
                finally:
                    with state.lock:
                        state.active -= 1

        def _stream(self, n_prompt: int, n_out: int, number: int, die: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            time.sleep(n_prompt * cfg["prefill_ms_per_token"] / 1e3)
            sent = 0
            bunch = max(1, int(cfg["bunch"]))
            held: list[bytes] | None = [] if cfg["burst"] else None  # a burst's chunks, sent in one write
            first_s = last_s = 0.0
            while sent < n_out:
                while state.hanging:  # shutting down: the stream stays open, silent
                    time.sleep(0.05)
                k = min(bunch, n_out - sent)
                with state.lock:
                    penalty = 1.0 + cfg["batch_penalty"] * (state.active - 1)
                time.sleep(k * cfg["token_ms"] * penalty / 1e3)
                last_s = time.monotonic()
                if sent == 0:
                    first_s = last_s
                if die and sent >= n_out // 2:
                    os._exit(3)  # the whole server dies mid-stream
                if cfg["malformed_every"] and number % cfg["malformed_every"] == 0 and sent >= 1:
                    self.wfile.write(b"data: {\"choices\": [{\"text\": \"oops\n\n")
                    self.wfile.flush()
                    return
                # llama-server may flush several tokens in one chunk; usage still counts them all
                self._chunk({"id": f"cmpl-{number}", "object": "text_completion",
                             "choices": [{"index": 0, "text": "tok" * k, "finish_reason": None}]}, held)
                sent += k
                with state.lock:
                    state.generation_tokens += k
            if n_out > 1:
                with state.lock:
                    state.tpot_s_sum += (last_s - first_s) / (n_out - 1)
                    state.tpot_count += 1
            self._chunk({"id": f"cmpl-{number}", "choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
                        held)
            self._chunk({"id": f"cmpl-{number}", "choices": [],
                         "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out,
                                   "total_tokens": n_prompt + n_out}}, held)
            self.wfile.write(b"".join(held or []) + b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def _die_with_parent() -> None:
    # Engines' workers watch their parent (vLLM's engine core does); the scripted child does the same.
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main(argv: list[str]) -> int:
    port = int(argv[1])
    cfg = {**DEFAULTS, **(json.loads(argv[2]) if len(argv) > 2 else {})}
    print(f"fake server: config {json.dumps(cfg, sort_keys=True)}", flush=True)
    if cfg["spawn_child"]:
        # A grandchild in our process group, as vLLM's engine workers are: stopping must take it too.
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], preexec_fn=_die_with_parent)
        print(f"fake server: child pid {child.pid}", flush=True)
    if cfg["exit_at_start"]:
        print(cfg["exit_at_start"], flush=True)
        return 1
    if cfg["oom_at_start"]:
        print("ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 99999999999", flush=True)
        print("error: out of memory while allocating the KV cache", flush=True)
        return 1
    time.sleep(float(cfg["startup_delay_s"]))
    state = _State(cfg)
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(state))
    server.daemon_threads = True
    print(f"fake server: listening on 127.0.0.1:{port}", flush=True)
    if not cfg["hang_on_sigterm"]:
        server.serve_forever()
        return 0
    import signal

    def on_term(signum: int, frame: object) -> None:
        if state.hanging:
            os._exit(0)
        state.hanging = True
        print("fake server: SIGTERM: no longer listening, holding the open streams", flush=True)
        threading.Thread(target=lambda: (server.shutdown(), server.server_close()), daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
