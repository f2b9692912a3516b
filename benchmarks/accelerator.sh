#!/usr/bin/env bash
# The accelerator checks in one command, at most 8 minutes on one GPU, one Markdown table:
# the JAX step vs PyTorch (float32 and half_precision: images/s, model FLOP utilisation), the
# frozen-step ratios against the FLOP model, and grouped vs sequential study throughput.
#
#   bash benchmarks/accelerator.sh [--out FILE.md] [--peak_tflops FLOAT32,BFLOAT16]
#   bash benchmarks/accelerator.sh --smoke     # the same on CPU at toy size (no sweep), ~1 min
#
# Runs from a checkout (PYTHONPATH is set to it) with $PYTHON (default python3); needs the
# project's dependencies and a GPU jax, PyTorch for its columns (the optional extra `bench`).
# Each part is stopped at its share of the 8 minutes (benchmarks/accelerator.py says how the
# settings were sized) and keeps the rows it measured; the path of the table is printed last.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
smoke=()
out=''
peak=()
while (($#)); do
  case "$1" in
    --smoke) smoke=(--smoke) ;;
    --out) out="$2"; shift ;;
    --out=*) out="${1#--out=}" ;;
    --peak_tflops) peak=(--peak_tflops "$2"); shift ;;
    --peak_tflops=*) peak=(--peak_tflops "${1#--peak_tflops=}") ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (use --smoke, --out FILE, --peak_tflops F32,BF16)" >&2
       exit 2 ;;
  esac
  shift
done
if [[ -z "$out" ]]; then
  out="$root/runs/accelerator${smoke:+_smoke}.md"
fi
mkdir -p "$(dirname "$out")"
rows="${out%.md}.rows.jsonl"
: >"$rows"

export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# JAX takes half the GPU's memory, not 75%: PyTorch runs in the same process.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}"
cd "$root" || exit 1

started=$(date +%s)
# Seconds from the start (benchmarks/accelerator.py says how they were sized): the steps part
# stops by steps_budget, the sweep by total_budget; the rest of the 8 minutes is the table.
steps_budget=250
total_budget=460
# A part past its deadline is stopped 20 s later (it checks the deadline between measurements).
timeout -k 5 $((steps_budget + 20)) "$python" benchmarks/accelerator.py steps --rows="$rows" \
  --deadline=$((started + steps_budget)) "${smoke[@]}" "${peak[@]}"
steps_status=$?
left=$((started + total_budget - $(date +%s)))
timeout -k 5 $((left > 1 ? left + 20 : 1)) "$python" benchmarks/accelerator.py sweep \
  --rows="$rows" --deadline=$((started + total_budget)) "${smoke[@]}"
sweep_status=$?
"$python" benchmarks/accelerator.py table --rows="$rows" --out="$out" --started="$started" \
  || exit 1
cat "$out"
echo "steps part exit status $steps_status, sweep part $sweep_status"
echo "wrote $out"
if ((steps_status != 0)); then exit "$steps_status"; fi
exit "$sweep_status"
