#!/usr/bin/env bash
# The README's two commands:
#   tools/dev.sh demo   install what is missing, build, run `cachet demo`
#   tools/dev.sh test   install what is missing, build, run every test:
#                       the normal build, the ASan+UBSan build, a TSan build of
#                       the threaded tests, valgrind on the
#                       core, fault and async tests, the whole tree built in
#                       the fuzzing configuration, and a bounded run of every
#                       fuzz target (the packaging test is one of the ctest tests)
#   tools/dev.sh check [PATTERN]
#                       the developer's loop: an incremental build, then the
#                       ctest tests whose name matches PATTERN (all without)
#   tools/dev.sh stress [PATTERN]
#                       the same build, then the tests (matching PATTERN)
#                       three times over at twice the cores' parallelism:
#                       races and timing assumptions that a quiet run hides
#   tools/dev.sh bench [NAME [ARGS...]]
#                       build, then run the benchmark bench/NAME (every one
#                       without); also installs PHP and Symfony's cache
#                       component, which bench_evict measures beside cachet
# It only installs Debian packages (apt-get), never downloads anything else.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
jobs=$(nproc 2>/dev/null || echo 2)

packages=(build-essential cmake pkg-config libhiredis-dev libsodium-dev
  libcmocka-dev libevent-dev libssl-dev openssl redis-server redis-tools clang
  libclang-rt-14-dev valgrind python3 man-db groff-base)

install_deps() { # install_deps [package...]: the packages above, or those
  local missing=() want=("${packages[@]}")
  [ $# -gt 0 ] && want=("$@")
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "dev.sh: installing ${missing[*]}" >&2
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian package starts a system redis-server; cachet's tests never use
  # it (each starts its own), and it must not be mistaken for a configured one.
}

build() { # build DIR [cmake args...]
  local dir=$1
  shift
  cmake -S . -B "$dir" -DCACHET_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
}

step() { printf '\n== %s ==\n' "$*"; }

case "${1:-}" in
demo)
  install_deps
  build build
  exec build/cachet demo
  ;;
test)
  install_deps
  started=$(date +%s)
  step "normal build: all tests"
  build build
  ctest --test-dir build --output-on-failure -j"$jobs"

  step "ASan+UBSan build: all tests"
  build build-asan -DCACHET_SANITIZE=address,undefined -DCACHET_BUILD_BENCH=OFF
  # Stack use after return too: a thread that touches another's returned
  # frame (a wake-up posted too late) is found where it happens.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"

  step "TSan build: the tests that share a handle between threads"
  tsan_tests=(test_slots test_mux test_core test_stampede test_near_table test_near
    test_chaos)
  cmake -S . -B build-tsan -DCACHET_WERROR=ON -DCACHET_SANITIZE=thread \
    -DCACHET_BUILD_BENCH=OFF >/dev/null
  cmake --build build-tsan -j"$jobs" --target "${tsan_tests[@]}" wire_fuzzer
  for t in "${tsan_tests[@]}"; do
    CACHET_SOURCE_DIR=$here TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
      "build-tsan/tests/$t"
  done
  # The wire fuzzer's corpus: the drivers' threads against a server thread.
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    build-tsan/fuzz/wire_fuzzer fuzz/corpus/wire_fuzzer

  step "without libevent: the async API links and says ENOTSUP"
  cmake -S . -B build-noasync -DCACHET_WERROR=ON -DCACHET_ASYNC=OFF \
    -DCACHET_BUILD_BENCH=OFF >/dev/null
  cmake --build build-noasync -j"$jobs" --target test_async
  build-noasync/tests/test_async

  step "valgrind memcheck: core, fault, async, machine, TLS, multiplexing and near-cache tests"
  for t in test_core test_faults test_async test_core_via_async test_machines \
    test_tls test_mux test_near; do
    CACHET_SOURCE_DIR=$here valgrind --quiet --error-exitcode=99 \
      --leak-check=full --errors-for-leak-kinds=definite,indirect \
      --track-fds=no "build/tests/$t"
  done

  step "fuzzing: the whole tree built with -DCACHET_FUZZ=ON, every target run, bounded"
  FUZZ_SECONDS=${FUZZ_SECONDS:-30} bash fuzz/run.sh

  echo
  echo "dev.sh: all tests passed in $(($(date +%s) - started)) s"
  ;;
check)
  build build
  ctest --test-dir build --output-on-failure -j"$jobs" ${2:+-R "$2"}
  ;;
stress)
  build build
  ctest --test-dir build --output-on-failure -j$((2 * jobs)) \
    --repeat until-fail:3 -LE "fuzz|packaging" ${2:+-R "$2"}
  ;;
bench)
  install_deps
  install_deps php-cli php-redis php-symfony-cache
  build build
  if [ $# -ge 2 ]; then
    exec "build/bench/$2" "${@:3}"
  fi
  for b in build/bench/bench_*; do
    step "$(basename "$b")"
    "$b"
  done
  ;;
*)
  echo "usage: tools/dev.sh demo | test | check [PATTERN] | stress [PATTERN] |" \
    "bench [NAME [ARGS...]]" >&2
  exit 2
  ;;
esac
