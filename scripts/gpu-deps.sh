# Sourced by scripts/gpu-check.sh and scripts/gpu-python.sh (bash). Sets PREFIX_ARGS: the cmake
# arguments that point at Debian 12 .debs of tqkv's -dev dependencies, unpacked into /opt/deps, for
# GPU machines that lack them. With DEBS empty, PREFIX_ARGS is empty (system packages are used).
PREFIX_ARGS=()
if [ -n "${DEBS:-}" ]; then
  mkdir -p /opt/deps
  for f in "$DEBS"/*.deb; do dpkg -x "$f" /opt/deps; done
  P=/opt/deps/usr
  export LD_LIBRARY_PATH=$P/lib/x86_64-linux-gnu:$P/lib/x86_64-linux-gnu/openblas-pthread:${LD_LIBRARY_PATH:-}
  # dpkg -x runs no maintainer scripts: point at the libraries the alternatives would have linked.
  LZMA=$(ls /lib/x86_64-linux-gnu/liblzma.so.5 /usr/lib/x86_64-linux-gnu/liblzma.so.5 2>/dev/null | head -1)
  # OpenBLAS: the imported target cmake/tqkvDependencies.cmake would make, pointing into /opt/deps.
  printf '%s\n' "add_library(tqkv::openblas INTERFACE IMPORTED)" \
    "set_target_properties(tqkv::openblas PROPERTIES INTERFACE_INCLUDE_DIRECTORIES $P/include/x86_64-linux-gnu/openblas-pthread" \
    "  INTERFACE_LINK_LIBRARIES $P/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so)" > /opt/deps/tqkv-openblas.cmake
  PREFIX_ARGS=(-DCMAKE_PREFIX_PATH=$P -DCMAKE_PROJECT_INCLUDE=/opt/deps/tqkv-openblas.cmake
    -DLIBLZMA_INCLUDE_DIR=$P/include -DLIBLZMA_LIBRARY=$LZMA)
fi
