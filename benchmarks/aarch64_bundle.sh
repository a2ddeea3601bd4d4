#!/usr/bin/env bash
# Functional check of a CPU deploy bundle on aarch64 under qemu-user emulation (never a speed measurement):
# select_model.py and predict.py run in an arm64 Debian root with only Python, numpy, Pillow, onnxruntime and
# openvino (aarch64 wheels), and the script says what each runtime did there.
#
#   sudo benchmarks/aarch64_bundle.sh BUNDLE [IMAGE]
#
# Needs root (chroot, binfmt_misc) and Debian's qemu-user-static, debootstrap and binfmt-support (installed if
# missing). The root is cached in $AARCH64_ROOT (default ~/.cache/edgevision/aarch64-root; the first build takes
# about 8 minutes). Writes BUNDLE/decision-aarch64.json and prints the pick; exit 0 when the selection completed.
set -euo pipefail
bundle=$(readlink -f "${1:?usage: aarch64_bundle.sh BUNDLE [IMAGE]}")
image=${2:-}
root=${AARCH64_ROOT:-$HOME/.cache/edgevision/aarch64-root}
[ -f "$bundle/select_model.py" ] || { echo "error: $bundle is not a CPU deploy bundle (no select_model.py)" >&2; exit 2; }

need=""
for tool in qemu-aarch64-static:qemu-user-static debootstrap:debootstrap update-binfmts:binfmt-support; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need="$need ${tool#*:}"
done
if [ -n "$need" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need; fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true

if [ ! -f "$root/.ready" ]; then
  rm -rf "$root"; mkdir -p "$root"
  debootstrap --foreign --arch arm64 --variant=minbase --include=python3,python3-venv,python3-pip bookworm \
    "$root" http://deb.debian.org/debian
  chroot "$root" /debootstrap/debootstrap --second-stage
  mkdir -p "$root/root/wheels"
  # openvino needs the 2_35 tag, or pip falls back to a 2023 release
  python3 -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux_2_35_aarch64 \
    --python-version 3.11 -d "$root/root/wheels" numpy pillow onnxruntime openvino
  chroot "$root" /bin/sh -c 'python3 -m venv /root/venv && /root/venv/bin/pip install -q --no-index --find-links /root/wheels numpy pillow onnxruntime openvino'
  touch "$root/.ready"
fi

# /proc for the runtimes (os.cpu_count, cpuinfo); not the host's /sys: ONNX Runtime crashed at import with it
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true; rm -rf "$root/bundle"' EXIT
rm -rf "$root/bundle"; cp -r "$bundle" "$root/bundle"
[ -n "$image" ] && cp "$image" "$root/bundle/input-image"

echo "== under emulation: $(chroot "$root" uname -m), $(chroot "$root" /root/venv/bin/python -c 'import platform; print(platform.python_version())')"
set +e
chroot "$root" /bin/sh -c 'cd /bundle && /root/venv/bin/python select_model.py --rounds 2'
status=$?
set -e
[ -f "$root/bundle/decision.json" ] && cp "$root/bundle/decision.json" "$bundle/decision-aarch64.json"
if [ $status -eq 0 ] && [ -n "$image" ]; then
  chroot "$root" /bin/sh -c 'cd /bundle && /root/venv/bin/python predict.py input-image --top 3'
fi
echo "== what each runtime did under emulation (from decision-aarch64.json):"
host=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
python3 - "$bundle/decision-aarch64.json" "$(dirname "$0")/results/aarch64_bundle.md" "$host" "$status" <<'PY' || true
import json, sys, time
d = json.load(open(sys.argv[1]))
dev = d["device"]
lines = ["# CPU deploy bundle on aarch64 under qemu-user emulation (functional only, no speed)", "",
         f"`benchmarks/aarch64_bundle.sh BUNDLE` on an x86-64 host ({sys.argv[3]}), {time.strftime('%Y-%m-%d %H:%M')}: "
         f"model {d['model']}, arm64 Debian root, runtimes {dev['runtimes']}; select_model.py exit {sys.argv[4]}.",
         f"The device as it saw itself: {dev['cpu']} ({dev['arch']}), features {dev['features'] or 'none readable'}.", "",
         "| candidate | status | reason |", "|---|---|---|"]
lines += [f"| {c['key']} | {c['status']} | {c['reason'] or ''} |" for c in d["candidates"]]
lines += ["", f"Picked: {d['picked']} -> {', '.join(d['files'])}. Latencies under emulation mean nothing and are not shown."]
text = "\n".join(lines) + "\n"
print(text)
open(sys.argv[2], "w").write(text)
PY
exit $status
