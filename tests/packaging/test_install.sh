#!/usr/bin/env bash
# Packaging test: install a build into a temporary prefix, check what was
# installed, build the examples against it the three ways a user would
# (pkg-config, pkg-config --static, find_package), and run them against a
# private redis-server.
#
#   bash tests/packaging/test_install.sh BUILD_DIR SOURCE_DIR
#
# BUILD_DIR must already be built (at least cachet_static, cachet_shared and
# cachet_cli). Everything this script creates lives in one mktemp directory,
# removed on exit, and the server it starts is stopped on exit, pass or fail.
# Exit 0 when every check passes; otherwise 1 with a FAIL line saying what.
# Exit 77 (skipped) for a sanitizer or fuzzing build: its libcachet.a needs
# the sanitizer runtime, which an ordinary consumer does not link.
set -Eeuo pipefail

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
trap 'fail "line $LINENO: command failed (exit $?): $BASH_COMMAND"' ERR

[ $# -eq 2 ] || {
  echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2
  exit 2
}
BUILD=$(cd "$1" && pwd) || fail "no build directory $1"
SRC=$(cd "$2" && pwd) || fail "no source directory $2"
[ -f "$BUILD/CMakeCache.txt" ] || fail "$BUILD is not a CMake build directory"
[ -f "$SRC/examples/basic.c" ] || fail "$SRC is not the cachet source tree"

cache_var() {
  sed -n "s/^$1:[A-Z]*=//p" "$BUILD/CMakeCache.txt" | head -n 1
}
if [ -n "$(cache_var CACHET_SANITIZE)" ] ||
  [ "$(cache_var CACHET_FUZZ)" = ON ]; then
  echo "SKIP: $BUILD is a sanitizer or fuzzing build; package a plain one"
  exit 77
fi

for tool in cmake cc pkg-config readelf nm redis-server; do
  command -v "$tool" >/dev/null || fail "needs $tool"
done

# The user's own configuration must not leak into the runs below.
unset CACHET_URL CACHET_HOST CACHET_PORT CACHET_DB CACHET_USERNAME \
  CACHET_PASSWORD CACHET_USE_TLS CACHET_KEY_PREFIX CACHET_TIMEOUT_MS \
  CACHET_POOL_SIZE CACHET_MULTIPLEX CACHET_KEYS CACHET_KEYS_FILE CACHET_ENCRYPT \
  CACHET_ACCEPT_UNSEALED

# A short base directory: the server's unix socket path must fit in
# sun_path (108 bytes).
base=${TMPDIR:-/tmp}
[ ${#base} -le 60 ] || base=/tmp
WORK=$(mktemp -d "$base/cachet-pkg-XXXXXX")
PREFIX=$WORK/prefix
OUT=$WORK/out
SRV_DIR=$WORK/redis
SOCK=$SRV_DIR/redis.sock
SRV_PID=
mkdir -p "$OUT" "$SRV_DIR"

cleanup() {
  if [ -n "$SRV_PID" ]; then
    kill -TERM "$SRV_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$SRV_PID" 2>/dev/null || break
      sleep 0.05
    done
    kill -KILL "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n== packaging: %s\n' "$*"; }
ok() { printf '   ok  %s\n' "$*"; }
skip() { printf '   SKIP  %s\n' "$*"; }

# Run a command quietly; on failure show its output and fail with $1.
quiet() {
  local what=$1
  shift
  local log=$WORK/last.log
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    fail "$what"
  fi
}

# The install layout as configured (GNUInstallDirs), relative to the prefix.
LIBDIR=$(cache_var CMAKE_INSTALL_LIBDIR)
INCDIR=$(cache_var CMAKE_INSTALL_INCLUDEDIR)
BINDIR=$(cache_var CMAKE_INSTALL_BINDIR)
MANDIR=$(cache_var CMAKE_INSTALL_MANDIR)
: "${LIBDIR:=lib}" "${INCDIR:=include}" "${BINDIR:=bin}"
: "${MANDIR:=share/man}"
for d in "$LIBDIR" "$INCDIR" "$BINDIR" "$MANDIR"; do
  case $d in /*) fail "install dir $d is absolute: cannot relocate" ;; esac
done
VERSION=$(sed -n 's/^#define CACHET_VERSION_STRING "\(.*\)"$/\1/p' \
  "$SRC/include/cachet.h")
MAJOR=${VERSION%%.*}
[ -n "$VERSION" ] || fail "no CACHET_VERSION_STRING in include/cachet.h"

# ---------------------------------------------------------------------------
step "install into a temporary prefix"
quiet "cmake --install failed" cmake --install "$BUILD" --prefix "$PREFIX"
L=$PREFIX/$LIBDIR
for f in "$INCDIR/cachet.h" "$LIBDIR/libcachet.a" "$LIBDIR/libcachet.so" \
  "$LIBDIR/libcachet.so.$MAJOR" "$LIBDIR/libcachet.so.$VERSION" \
  "$LIBDIR/pkgconfig/cachet.pc" "$LIBDIR/cmake/cachet/cachetConfig.cmake" \
  "$LIBDIR/cmake/cachet/cachetConfigVersion.cmake" \
  "$LIBDIR/cmake/cachet/cachetTargets.cmake" "$BINDIR/cachet" \
  "$MANDIR/man1/cachet.1"; do
  [ -e "$PREFIX/$f" ] || fail "not installed: $f"
done
[ -x "$PREFIX/$BINDIR/cachet" ] || fail "$BINDIR/cachet is not executable"
ok "every expected file is installed"

# Only the public header: src/*.h are internal.
extra=$(cd "$PREFIX/$INCDIR" && find . -mindepth 1 ! -name cachet.h)
[ -z "$extra" ] || fail "the include dir holds more than cachet.h: $extra"
cmp -s "$SRC/include/cachet.h" "$PREFIX/$INCDIR/cachet.h" ||
  fail "installed cachet.h differs from include/cachet.h"
ok "include dir holds only cachet.h"

soname=$(readelf -d "$L/libcachet.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libcachet.so.$MAJOR" ] ||
  fail "SONAME is '$soname', expected libcachet.so.$MAJOR"
ok "SONAME $soname"

# With hidden visibility only the API is exported.
leaked=$(nm -D --defined-only "$L/libcachet.so" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' |
  grep -v '^cachet_' || true)
[ -z "$leaked" ] || fail "libcachet.so exports non-cachet_ symbols: $leaked"
ok "libcachet.so exports only cachet_* symbols"

# The header and the library agree: every CACHET_API function is defined.
declared=$(sed -n 's/^CACHET_API[^(]*[ *]\(cachet_[a-z0-9_]*\)(.*/\1/p' \
  "$SRC/include/cachet.h" | sort -u)
defined=$(nm -D --defined-only "$L/libcachet.so" | awk '{print $3}' | sort -u)
missing=$(comm -23 <(echo "$declared") <(echo "$defined"))
if [ -n "$missing" ]; then
  echo "   NOTE  declared in cachet.h but not in libcachet.so yet:" \
    "${missing//$'\n'/ }"
fi
have_symbol() { grep -qx "$1" <<<"$defined"; }

for f in "$L/libcachet.so.$VERSION" "$PREFIX/$BINDIR/cachet"; do
  if readelf -d "$f" | grep -E 'R(UN)?PATH' | grep -qF "$BUILD"; then
    fail "$f keeps an RPATH into the build tree"
  fi
done
ok "no RPATH into the build tree"

v=$("$PREFIX/$BINDIR/cachet" --version) || fail "cachet --version failed"
[ "$v" = "cachet $VERSION" ] || fail "cachet --version printed '$v'"
ok "bin/cachet --version: $v"

# ---------------------------------------------------------------------------
step "pkg-config"
export PKG_CONFIG_PATH=$L/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
pcv=$(pkg-config --modversion cachet) || fail "pkg-config cannot find cachet"
[ "$pcv" = "$VERSION" ] || fail "cachet.pc says version $pcv, not $VERSION"
pcinc=$(pkg-config --variable=includedir cachet)
[ "$(cd "$pcinc" && pwd)" = "$(cd "$PREFIX/$INCDIR" && pwd)" ] ||
  fail "cachet.pc includedir $pcinc is not the installed one"
static_libs=$(pkg-config --static --libs cachet)
for lib in -lcachet -lhiredis -lsodium -lpthread; do
  grep -qw -- "$lib" <<<"$static_libs" ||
    fail "pkg-config --static --libs cachet lacks $lib: $static_libs"
done
ok "cachet.pc $pcv; --static adds hiredis, libsodium, pthread"

# Exactly the user's command line, shared.
# shellcheck disable=SC2046
quiet "pkg-config build of basic.c failed" \
  cc $(pkg-config --cflags cachet) "$SRC/examples/basic.c" -o "$OUT/basic-pc" \
  $(pkg-config --libs cachet)
readelf -d "$OUT/basic-pc" | grep -q "NEEDED.*\[libcachet.so.$MAJOR\]" ||
  fail "basic-pc is not linked to libcachet.so.$MAJOR"
ok "basic.c built with pkg-config (shared)"

# Fully static: proves Requires.private/Libs.private are complete.
# shellcheck disable=SC2046
quiet "pkg-config --static build of basic.c failed" \
  cc -static $(pkg-config --static --cflags cachet) "$SRC/examples/basic.c" \
  -o "$OUT/basic-pc-static" $(pkg-config --static --libs cachet)
if readelf -d "$OUT/basic-pc-static" 2>/dev/null | grep -q NEEDED; then
  fail "basic-pc-static still needs shared libraries"
fi
ok "basic.c built with pkg-config --static (fully static)"

# The examples' Makefile, on a copy so the source tree stays clean.
if command -v make >/dev/null; then
  mkdir -p "$WORK/mk"
  cp "$SRC/examples/Makefile" "$SRC/examples/basic.c" \
    "$SRC/examples/get_or_set.c" "$WORK/mk/"
  quiet "make basic (examples/Makefile) failed" make -C "$WORK/mk" basic
  cp "$WORK/mk/basic" "$OUT/basic-make"
  ok "examples/Makefile builds basic"
else
  skip "examples/Makefile: make is not installed"
fi

# get_or_set.c must always compile against the installed header; it can only
# link once the library defines cachet_get_or_set.
# shellcheck disable=SC2046
quiet "get_or_set.c does not compile against the installed header" \
  cc -std=c11 -Wall -Wextra -Wpedantic -Werror -pthread \
  $(pkg-config --cflags cachet) -c "$SRC/examples/get_or_set.c" \
  -o "$OUT/get_or_set.o"
ok "get_or_set.c compiles against the installed header"
GOS=0
if have_symbol cachet_get_or_set; then
  GOS=1
  # shellcheck disable=SC2046
  quiet "pkg-config build of get_or_set.c failed" \
    cc -pthread "$OUT/get_or_set.o" -o "$OUT/get_or_set-pc" \
    $(pkg-config --libs cachet)
  ok "get_or_set built with pkg-config"
else
  skip "linking and running get_or_set: libcachet.so lacks cachet_get_or_set"
fi

# ---------------------------------------------------------------------------
step "find_package(cachet)"
quiet "configuring examples/ with find_package failed" \
  cmake -S "$SRC/examples" -B "$WORK/ex" -DCMAKE_PREFIX_PATH="$PREFIX" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo
found=$(sed -n 's/^cachet_DIR:PATH=//p' "$WORK/ex/CMakeCache.txt")
[ "$(cd "$found" && pwd)" = "$(cd "$L/cmake/cachet" && pwd)" ] ||
  fail "find_package found cachet in $found, not in the temporary prefix"
targets=(basic basic_static near_cache sealed)
[ "$GOS" = 1 ] && targets+=(get_or_set)
quiet "building the examples with find_package failed" \
  cmake --build "$WORK/ex" --target "${targets[@]}"
readelf -d "$WORK/ex/basic" | grep -q "NEEDED.*\[libcachet.so.$MAJOR\]" ||
  fail "cachet::cachet did not link libcachet.so.$MAJOR"
if readelf -d "$WORK/ex/basic_static" | grep -q 'NEEDED.*libcachet'; then
  fail "cachet::cachet_static linked the shared library"
fi
cp "$WORK/ex/basic" "$OUT/basic-cmake"
cp "$WORK/ex/basic_static" "$OUT/basic-cmake-static"
cp "$WORK/ex/sealed" "$OUT/sealed-cmake"
[ "$GOS" = 1 ] && cp "$WORK/ex/get_or_set" "$OUT/get_or_set-cmake"
ok "built ${targets[*]} (cachet::cachet, cachet::cachet_static)"

# ---------------------------------------------------------------------------
step "run the examples against a private redis-server"
redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 \
  --save '' --appendonly no --dir "$SRV_DIR" --daemonize no \
  --logfile "$SRV_DIR/redis.log" >/dev/null 2>&1 &
SRV_PID=$!
up=0
for _ in $(seq 1 250); do
  if command -v redis-cli >/dev/null; then
    redis-cli -s "$SOCK" PING 2>/dev/null | grep -q PONG && up=1 && break
  elif [ -S "$SOCK" ]; then
    up=1 && break
  fi
  kill -0 "$SRV_PID" 2>/dev/null || break
  sleep 0.02
done
if [ "$up" != 1 ]; then
  cat "$SRV_DIR/redis.log" >&2 || true
  fail "redis-server did not start"
fi
export CACHET_URL=unix://$SOCK
export LD_LIBRARY_PATH=$L${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

lib=$(ldd "$OUT/basic-pc" | awk '/libcachet\.so/ {print $3}')
[ "$lib" -ef "$L/libcachet.so.$MAJOR" ] ||
  fail "basic-pc loads libcachet from '$lib', not from the prefix"

for exe in "$OUT"/*; do
  [ -x "$exe" ] || continue
  name=${exe##*/}
  log=$WORK/run-$name.log
  # Each run in its own key prefix, so runs cannot see each other's keys.
  rc=0
  CACHET_KEY_PREFIX="pkgtest-$name:" timeout 120 "$exe" >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] || [ "$(tail -n 1 "$log")" != ok ]; then
    cat "$log" >&2
    fail "$name exited $rc"
  fi
  ok "$name"
done

# The installed CLI against the same server.
C=$PREFIX/$BINDIR/cachet
"$C" set pkgtest:cli hello --ttl 60000 || fail "installed cachet set failed"
got=$("$C" get pkgtest:cli) || fail "installed cachet get failed"
[ "$got" = hello ] || fail "installed cachet get printed '$got'"
rc=0
"$C" get pkgtest:absent || rc=$?
[ "$rc" -eq 1 ] || fail "installed cachet get of an absent key exited $rc"
ok "installed bin/cachet set/get"

# ---------------------------------------------------------------------------
step "man page"
MAN=$PREFIX/$MANDIR/man1/cachet.1
if command -v man >/dev/null; then
  MAN_DISABLE_SECCOMP=1 MANWIDTH=80 man -l "$MAN" >"$WORK/man.txt" \
    2>"$WORK/man.err" || {
    cat "$WORK/man.err" >&2
    fail "man -l cachet.1 failed"
  }
  renderer="man -l"
elif command -v groff >/dev/null; then
  groff -man -Tutf8 "$MAN" >"$WORK/man.txt" 2>"$WORK/man.err" ||
    fail "groff could not render cachet.1"
  renderer="groff -man"
else
  renderer=
  skip "rendering cachet.1: neither man nor groff is installed"
fi
if [ -n "$renderer" ]; then
  for section in NAME SYNOPSIS DESCRIPTION COMMANDS ENVIRONMENT \
    "EXIT STATUS" EXAMPLES "SEE ALSO"; do
    grep -q "^$section" "$WORK/man.txt" ||
      fail "cachet.1 rendered by $renderer has no $section section"
  done
  if [ -s "$WORK/man.err" ]; then
    cat "$WORK/man.err" >&2
    fail "$renderer warned about cachet.1"
  fi
  ok "cachet.1 renders with $renderer"
fi
# The manual keeps up with the CLI: every command `cachet --help` lists has
# an entry, and every option its `--help` names is in the manual.
if [ -n "$renderer" ]; then
  C=$PREFIX/$BINDIR/cachet
  cmds=$("$C" --help | sed -n '/^Commands:/,/^$/s/^  \([a-z-]*\) .*/\1/p')
  [ -n "$cmds" ] || fail "cachet --help lists no commands"
  for cmd in $cmds; do
    grep -Eq "^ {7}$cmd( |\$)" "$WORK/man.txt" ||
      fail "cachet.1 has no entry for the command '$cmd'"
    for opt in $("$C" "$cmd" --help | grep -oE -- '--[a-z][a-z-]*' | sort -u); do
      grep -qF -- "$opt" "$WORK/man.txt" ||
        fail "cachet.1 does not mention '$cmd $opt' (from cachet $cmd --help)"
    done
  done
  ok "cachet.1 covers the $(wc -w <<<"$cmds") commands of cachet --help" \
    "and their options"
fi
if command -v groff >/dev/null; then
  warnings=$(groff -man -Tutf8 -ww -z "$MAN" 2>&1)
  [ -z "$warnings" ] || fail "groff -ww warns about cachet.1: $warnings"
  ok "groff -ww: no warnings"
fi

echo
echo "packaging: all checks passed"
