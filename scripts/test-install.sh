#!/usr/bin/env bash
# Proves an installed bccl is usable from outside this tree: installs a build into a temporary
# prefix with `cmake --install`, builds the CMake (find_package) and pkg-config consumers in
# examples/ against it, runs both under the installed bcclrun with 2 ranks, and imports the
# installed bccl_torch if the build has it. Nothing of the build tree may leak into the result.
#   scripts/test-install.sh [BUILD_DIR]    (default: build, under the source tree; absolute
#                                            paths too; configured and built if needed)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-build}"
case "$dir" in
  /*) build="$dir" ;;
  *) build="$root/$dir" ;;
esac
# Under ctest the tree is built already and must not be rebuilt from inside its own test run.
if [ "${BCCL_TEST_INSTALL_NO_BUILD:-0}" != 1 ]; then
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  cmake --build "$build" -j "$(nproc)" >/dev/null
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
passed=0
failed=0
check() {  # name, command...
  local name="$1"
  shift
  if "$@" >"$tmp/out.log" 2>&1; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    sed 's/^/     /' "$tmp/out.log" | tail -30
    failed=$((failed + 1))
  fi
}

check "cmake --install to a temporary prefix" cmake --install "$build" --prefix "$prefix"
config="$(find "$prefix" -name bcclConfig.cmake | head -1)"
pc="$(find "$prefix" -name bccl.pc | head -1)"
check "bcclConfig.cmake and bccl.pc installed" test -n "$config" -a -n "$pc"

check "CMake consumer (find_package(bccl), bccl::bccl) builds" \
  bash -c "cmake -S '$root/examples/consumer_cmake' -B '$tmp/cmake-build' -DCMAKE_PREFIX_PATH='$prefix' && \
           cmake --build '$tmp/cmake-build'"
mkdir -p "$tmp/pc-build"
check "pkg-config consumer builds" \
  env PKG_CONFIG_PATH="$(dirname "$pc")" make -C "$tmp/pc-build" -f "$root/examples/consumer_pkgconfig/Makefile"
check "pkg-config --cflags --libs bccl" \
  bash -c "PKG_CONFIG_PATH='$(dirname "$pc")' pkg-config --cflags --libs bccl | grep -q -- -lbccl"

# The installed launcher, library and programs only: no build directory on any search path.
check "CMake consumer runs under the installed bcclrun, 2 ranks" \
  env -u LD_LIBRARY_PATH BCCL_TIMEOUT_MS=60000 timeout 120 "$prefix/bin/bcclrun" -n 2 "$tmp/cmake-build/consumer"
check "pkg-config consumer runs under the installed bcclrun, 2 ranks" \
  env -u LD_LIBRARY_PATH BCCL_TIMEOUT_MS=60000 timeout 120 "$prefix/bin/bcclrun" -n 2 "$tmp/pc-build/consumer"
check "installed programs resolve libbccl inside the prefix" \
  bash -c "ldd '$prefix/bin/bcclrun' '$tmp/cmake-build/consumer' | grep libbccl | grep -v -q '$build'"

module="$(find "$prefix" -path '*bccl_torch/__init__.py' | head -1)"
if [ -n "$module" ]; then
  check "installed bccl_torch imports and registers the backend" \
    env PYTHONPATH="$(dirname "$(dirname "$module")")" /usr/bin/python3 -c \
    "import bccl_torch, torch.distributed as d; assert d.Backend('bccl') == 'bccl'; \
     assert '$build' not in open('/proc/self/maps').read(); print(bccl_torch.__file__, bccl_torch.version())"
fi
echo "test-install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
