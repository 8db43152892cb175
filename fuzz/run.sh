#!/usr/bin/env bash
# Runs one fuzz target for SECONDS (default 610) with the settings the README documents:
# its seeds, its input size, a 2 GiB memory cap and a 10 s per-input timeout (so hangs
# and quadratic blow-ups are findings), one job. New inputs go to corpus/TARGET (not
# committed); crashes to artifacts/TARGET. The log is logs/TARGET.log.
#
#   fuzz/run.sh parse_exposition 610
#
# Extra arguments after SECONDS are passed to libFuzzer.
set -euo pipefail
cd "$(dirname "$0")"

target=${1:?usage: run.sh TARGET [SECONDS] [libFuzzer args...]}
seconds=${2:-610}
shift $(( $# >= 2 ? 2 : 1 ))

case "$target" in
  parse_exposition) max_len=65536; seeds=(../testdata/exporters) ;;
  remote_write)     max_len=65536; seeds=(seeds/remote_write) ;;
  push_batch)       max_len=65536; seeds=(seeds/push_batch) ;;
  kmsg_line)        max_len=32768; seeds=(../testdata/kernel-logs) ;;
  nvsmi_query)      max_len=65536; seeds=(../testdata/nvidia-smi) ;;
  config_toml)      max_len=16384; seeds=(seeds/config_toml) ;;
  rules_toml)       max_len=40960; seeds=(seeds/rules_toml) ;;
  *) echo "unknown target $target" >&2; exit 2 ;;
esac

dict=()
if [[ -f dicts/$target.dict ]]; then
  dict=(-dict="dicts/$target.dict")
fi

mkdir -p "corpus/$target" logs
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-fuzz}
cargo fuzz run -s none -O -a --codegen-units 4 "$target" "corpus/$target" "${seeds[@]}" -- \
  -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 "${dict[@]}" "$@" 2>&1 | tee "logs/$target.log"
