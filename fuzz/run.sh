#!/usr/bin/env bash
# Build the whole tree with clang in the fuzzing configuration
# (-DCACHET_FUZZ=ON: libFuzzer, ASan, UBSan on the library and on everything
# that links it), then run every fuzz/*_fuzzer.c for a bounded time on a
# scratch copy of its seed corpus, so CI never grows the committed corpus.
# Exits nonzero if the build fails or any target crashes, leaks or times out.
# The targets without a server run as many at once as there are cores.
#
# Environment:
#   FUZZ_SECONDS     seconds per decoder target (default 30)
#   FUZZ_OPS_SECONDS seconds per ops_* target, which run whole operation
#                    sequences against a private Redis (default 60);
#                    ops_model_fuzzer runs twice more, half as long each,
#                    with multiplexed connections and with near caches;
#                    ops_model_cluster_fuzzer once more with near caches
#   FUZZ_BUILD_DIR   build directory (default: <repo>/build-fuzz)
#   FUZZ_TARGETS     space-separated subset of targets (default: all)
#   FUZZ_ARTIFACTS   where crash/leak inputs go (default: <build>/artifacts)
#   FUZZ_KEEP_WORK   non-empty: keep the scratch corpora and print where
#   CC               compiler (default: clang)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
build=${FUZZ_BUILD_DIR:-$repo/build-fuzz}
seconds=${FUZZ_SECONDS:-30}
ops_seconds=${FUZZ_OPS_SECONDS:-60}
artifacts=${FUZZ_ARTIFACTS:-$build/artifacts}

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  targets=()
  for src in "$here"/*_fuzzer.c; do
    [[ -e "$src" ]] || continue
    targets+=("$(basename "$src" .c)")
  done
fi
if [[ ${#targets[@]} -eq 0 ]]; then
  echo "run.sh: no fuzz targets found" >&2
  exit 1
fi

# The whole tree, not only the targets: a user who configures with
# -DCACHET_FUZZ=ON and runs a plain `cmake --build` must get a build.
CC=${CC:-clang} cmake -S "$repo" -B "$build" -DCACHET_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)"

mkdir -p "$artifacts"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/cachet-fuzz.XXXXXX")
if [[ -z "${FUZZ_KEEP_WORK:-}" ]]; then
  trap 'rm -rf "$scratch"' EXIT
fi

# Each run: a target, and for ops_model_fuzzer two more: one whose handles
# use multiplexed connections (tests/harness.c reads CACHET_TEST_MULTIPLEX),
# one whose handles keep a near cache (ops_model.c reads CACHET_FUZZ_NEAR);
# ops_model_cluster_fuzzer runs once more with near caches.
runs=()
for t in "${targets[@]}"; do
  runs+=("$t:")
  [[ $t == ops_model_fuzzer ]] && runs+=("$t:mux" "$t:near")
  [[ $t == ops_model_cluster_fuzzer ]] && runs+=("$t:near")
done

# start RUN: run one target (or variant) to its end, its output in
# $scratch/NAME.log and its exit status in $scratch/NAME.rc.
start() {
  local run=$1 t variant name work secs args env
  t=${run%%:*}
  variant=${run#*:}
  name=$t${variant:+-$variant}
  work="$scratch/$name"
  mkdir -p "$work"
  if [[ -d "$here/corpus/$t" ]]; then
    cp -R "$here/corpus/$t/." "$work/"
  fi
  secs=$seconds
  [[ $t == ops_* ]] && secs=$ops_seconds
  [[ -n $variant ]] && secs=$((secs / 2))
  args=("-max_total_time=$secs" "-print_final_stats=1"
        "-artifact_prefix=$artifacts/$name-")
  # An input of the wire fuzzer that runs for seconds is a call that
  # waited many deadlines of 250 ms: a finding, not a slow machine.
  [[ $t == wire_fuzzer ]] && args+=("-timeout=10")
  if [[ -f "$here/$t.dict" ]]; then
    args+=("-dict=$here/$t.dict")
  fi
  env=()
  [[ $variant == mux ]] && env=(CACHET_TEST_MULTIPLEX=2)
  [[ $variant == near ]] && env=(CACHET_FUZZ_NEAR=1)
  echo "== $t${variant:+ ($variant)} (${secs}s)"
  local rc=0
  env "${env[@]}" "$build/fuzz/$t" "${args[@]}" "$work" \
    >"$scratch/$name.log" 2>&1 || rc=$?
  echo "$rc" >"$scratch/$name.rc"
}

# report RUN: what `start` left, once it has ended.
failed=()
report() {
  local run=$1 name log
  name=${run%%:*}
  [[ -n ${run#*:} ]] && name=$name-${run#*:}
  log="$scratch/$name.log"
  if [[ $(cat "$scratch/$name.rc") == 0 ]]; then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" |
      grep -o '[0-9]*$' || echo "?")
    echo "   $name ok: $execs executions, corpus $(ls "$scratch/$name" |
      wc -l) inputs"
  else
    echo "   $name FAILED (see below; reproducer under $artifacts)"
    # An ops target prints the operation sequence before its stack: that,
    # not the stack, is what tells the bug (and a flaky one may not come
    # back when the input is run again).
    if grep -q "the sequence:" "$log"; then
      sed -n '/the sequence:/,$p' "$log" | grep -v '^#[0-9]' | head -n 150
    else
      tail -n 40 "$log"
    fi
    failed+=("$name")
  fi
}

# The targets without a server use one core each: as many run at once as
# there are cores. The ops_* targets use two (the client and its Redis),
# so they run one at a time.
cores=$(nproc 2>/dev/null || echo 2)
pure=() ops=()
for run in "${runs[@]}"; do
  if [[ $run == ops_* ]]; then ops+=("$run"); else pure+=("$run"); fi
done
for ((i = 0; i < ${#pure[@]}; i += cores)); do
  batch=("${pure[@]:i:cores}")
  for run in "${batch[@]}"; do start "$run" & done
  wait
  for run in "${batch[@]}"; do report "$run"; done
done
for run in "${ops[@]}"; do
  start "$run"
  report "$run"
done

if [[ -n "${FUZZ_KEEP_WORK:-}" ]]; then
  echo "scratch corpora kept in $scratch"
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "run.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "run.sh: all ${#targets[@]} targets ran clean (${#runs[@]} runs)"
