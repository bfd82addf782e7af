#!/usr/bin/env bash
# Installs tqkv from an existing build (default ./build) into a temporary prefix, then builds and
# runs a tiny consumer project against the INSTALLED package two ways: CMake find_package(tqkv)
# (target tqkv::tqkv) and a plain compiler line from pkg-config (tqkv.pc). Also runs the installed
# CLI with its default model (found under share/tqkv at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[ -f "$build/CMakeCache.txt" ] || { echo "ci-consumer: no build in '$build' (run cmake first)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix"
test -f "$prefix/lib/cmake/tqkv/tqkvConfig.cmake"
test -f "$prefix/lib/cmake/tqkv/tqkvConfigVersion.cmake"
test -f "$prefix/lib/pkgconfig/tqkv.pc"
test -f "$prefix/include/tqkv/kv_cache.h"

echo "== every installed public header compiles on its own"
for h in "$prefix"/include/tqkv/*.h; do
  echo "#include <tqkv/$(basename "$h")>" | c++ -std=c++20 -fsyntax-only -Wall -Wextra -Werror -I"$prefix/include" -x c++ -
done

echo "== consumer via find_package(tqkv)"
cmake -S tests/consumer -B "$tmp/consumer" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix"
cmake --build "$tmp/consumer"
"$tmp/consumer/tqkv_consumer"

echo "== consumer via pkg-config tqkv"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# shellcheck disable=SC2046
c++ -std=c++20 -O2 tests/consumer/main.cc -o "$tmp/consumer_pc" $(pkg-config --cflags --libs tqkv)
"$tmp/consumer_pc"

echo "== installed CLI finds its default model under share/tqkv"
mkdir -p "$tmp/elsewhere"
(cd "$tmp/elsewhere" && "$prefix/bin/tqkv" generate -p "It is a truth universally acknowledged" -n 8 --temp 0 \
   -ctk q8_0 -ctv q8_0 -t 1 >/dev/null)
echo "ci-consumer: OK"
