#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (CI has no GPU, so these never run there):
#   1. the `requires_cuda` tests (CUDA GEMM timing with events and NVML power, the Triton
#      matmul and the CUDA matmul through Kernel Tuner, `perfpred demo --gpu --quick`, the
#      GPU fingerprint);
#   2. `perfpred demo --gpu` at its full size (Triton matmul, 4096^3 fp16);
#   3. the CUDA matmul's whole space (33 configs, n = 4096) brute-forced through the kernel
#      collector and written as a Kernel Tuner cache file;
#   4. a small CUDA GEMM sweep (bf16, Sobol shapes) with NVML power.
# Usage: bash benchmarks/gpu_check.sh [OUTDIR]   (default: $OUT, else gpu-check/)
# Missing Python packages can travel as wheels in .whl/ (installed into /tmp/site).
set -u
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
run=$(mktemp -d /tmp/perfpred-gpu-check.XXXX)
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/ failed"; exit 1; }
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
perfpred() { $py -m perfpred.cli "$@"; }
step() { echo; echo "=== $* ($(date +%T))"; }
failed="$run/failed_checks"
: >"$failed"
# Runs a check and notes it when it fails; the later checks still run.
check() { local name=$1; shift; "$@" || echo "$name (exit $?)" >>"$failed"; }

{
  step "GPU and software"
  check nvidia-smi nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv
  check imports $py -c "import torch, triton, kernel_tuner; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'kernel_tuner', kernel_tuner.__version__)"
  check "perfpred env" perfpred env --device cuda --json

  step "requires_cuda tests"
  check "requires_cuda tests" timeout 150 $py -m pytest -p no:cacheprovider -m requires_cuda -v -rs --timeout 120 \
    tests/test_gemm_collector.py tests/test_kernel_collector.py tests/test_cli_tune_demo.py tests/test_hardware.py

  step "perfpred demo --gpu (Triton matmul 4096^3 fp16, budget 20)"
  check "demo --gpu" env COLUMNS=140 timeout 200 $py -m perfpred.cli demo --gpu --output "$run/demo"

  step "CUDA matmul through Kernel Tuner: the whole space at n = 4096"
  check "CUDA matmul space" timeout 100 $py - "$run" <<'EOF'
import sys, time
from pathlib import Path
from perfpred.collect import KernelCollector, get_kernel
from perfpred.collect.importers import export_kernel_tuner_cache
from perfpred.datasets import MeasurementStore

run = Path(sys.argv[1])
store = MeasurementStore(run / "matmul_cuda", create=True)
t0 = time.perf_counter()
with KernelCollector(get_kernel("matmul_cuda"), problem_size={"n": 4096}) as c:
    for cfg in c.configs():
        m = c.measure(cfg)
        store.append([m])
        gflops = 2 * 4096**3 / (m.runtime_ms * 1e6) if m.status == "ok" else float("nan")
        print(m.status, dict(cfg.params), f"{m.runtime_ms or float('nan'):.4g} ms cv {m.cv or 0:.3f} "
              f"{gflops:.0f} GFLOP/s", (m.error or "")[:120])
table = store.load()
ok = table[table["status"] == "ok"]
print(f"{len(table)} configs in {time.perf_counter() - t0:.0f} s, {len(ok)} ok; fastest {ok['runtime_ms'].min():.4g} ms, "
      f"slowest {ok['runtime_ms'].max():.4g} ms")
export_kernel_tuner_cache(store, run / "matmul_cuda_h200_4096.json")
EOF

  step "CUDA GEMM sweep with NVML power (bf16, 48 Sobol shapes 64..8192)"
  check "CUDA GEMM sweep" env COLUMNS=140 timeout 100 $py -m perfpred.cli collect gemm --device cuda --dtypes bf16 --n-shapes 48 \
    --m-range 64:8192 --n-range 64:8192 --k-range 64:8192 --max-time-s 0.3 --power-duration-s 0.5 \
    --store "$run/gemm_cuda"
  check "CUDA GEMM table" $py - "$run" <<'EOF'
import sys
from perfpred.datasets import MeasurementStore
t = MeasurementStore(sys.argv[1] + "/gemm_cuda").load()
cols = [c for c in ("workload.m", "workload.n", "workload.k", "runtime_ms", "cv", "power_w", "energy_j", "power_source")
        if c in t.columns]
print(t[cols].sort_values("runtime_ms").to_string(max_rows=60))
EOF
  nvidia-smi --query-gpu=temperature.gpu,power.draw,clocks.sm --format=csv
} 2>&1 | tee "$out/gpu_check.log"

tar czf "$out/gpu_check_runs.tar.gz" -C "$run" . 2>/dev/null
echo "wrote $out/gpu_check.log and $out/gpu_check_runs.tar.gz"
if [ -s "$failed" ]; then
  echo "GPU checks that failed:"; sed 's/^/  /' "$failed"
  exit 1
fi
echo "every GPU check passed"
