#!/usr/bin/env bash
# The README's quickstart, timed from an empty model cache, with this CPU's INT8 features:
# writes benchmarks/results/quickstart_TIER.txt (TIER: avx2, vnni, amx, ...). Run from the repository root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=$(mktemp -d); out=$(mktemp -d)
trap 'rm -rf "$cache" "$out"' EXIT
tier=$(python -c "from edgevision.measure.cpu_profile import host_flags, int8_features, int8_tier; print(int8_tier(int8_features(host_flags())))")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
flags=$(grep -o -w -E 'avx2|avx512f|avx512_vnni|avx_vnni|amx_int8|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')
start=$(date +%s.%N)
(cd "$out" && EDGEVISION_CACHE="$cache" edgevision compress convnext_mini --weights fashion-mnist --int8 \
    --data builtin:fashion-mnist --calib-data builtin:fashion-mnist > stdout 2> stderr)
end=$(date +%s.%N)
seconds=$(python -c "print(round($end - $start, 1))")
{
  echo "command: edgevision compress convnext_mini --weights fashion-mnist --int8 --data builtin:fashion-mnist --calib-data builtin:fashion-mnist"
  echo "empty model cache (EDGEVISION_CACHE); CPU: $cpu; INT8 features: $flags(tier $tier); $(nproc) cores"
  echo "wall time: $seconds s; measured $(date -u +%Y-%m-%dT%H:%MZ) by benchmarks/quickstart.sh"
  echo
  cat "$out/stdout"
} > "$here/results/quickstart_$tier.txt"
cat "$here/results/quickstart_$tier.txt"
