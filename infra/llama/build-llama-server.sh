#!/usr/bin/env bash
# Build llama.cpp's own OpenAI-compatible server (`llama-server`) from the source vendored in the
# llama-cpp-python sdist, into a cache directory. No model download, no prebuilt web UI.
#
#   infra/llama/build-llama-server.sh            # -> ~/.cache/foldem/llama-server/bin/llama-server
#   FOLDEM_LLAMA_CACHE=/some/dir infra/llama/build-llama-server.sh
#
# Idempotent: if the binary is already there (for this version) it only prints its path.
# Takes ~9 min on 2 cores. Needs cmake, a C++ compiler and pip (to fetch the sdist).
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE_DIR="${FOLDEM_LLAMA_CACHE:-${HOME}/.cache/foldem/llama-server}"
BIN_DIR="${CACHE_DIR}/bin"
BINARY="${BIN_DIR}/llama-server"
STAMP="${BIN_DIR}/.version"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
PIP="${PIP:-python3 -m pip}"

if [[ -x "${BINARY}" && -f "${STAMP}" && "$(cat "${STAMP}")" == "${VERSION}" ]]; then
    echo "${BINARY}"
    exit 0
fi

for tool in cmake c++; do
    command -v "${tool}" >/dev/null || { echo "build-llama-server: '${tool}' not found" >&2; exit 1; }
done

SRC_DIR="${CACHE_DIR}/src"
BUILD_DIR="${CACHE_DIR}/build-${VERSION}"
mkdir -p "${SRC_DIR}" "${BIN_DIR}"

SDIST="$(ls "${SRC_DIR}"/llama_cpp_python-"${VERSION}".tar.gz 2>/dev/null || true)"
if [[ -z "${SDIST}" ]]; then
    # The sdist carries llama.cpp under vendor/llama.cpp. --no-binary for this package only: its
    # build tools (scikit-build-core, for the metadata step) may come as wheels.
    ${PIP} download --no-deps --no-binary llama-cpp-python --dest "${SRC_DIR}" "llama-cpp-python==${VERSION}" >&2
    SDIST="${SRC_DIR}/llama_cpp_python-${VERSION}.tar.gz"
fi

UNPACKED="${SRC_DIR}/llama_cpp_python-${VERSION}"
if [[ ! -d "${UNPACKED}/vendor/llama.cpp" ]]; then
    tar -xzf "${SDIST}" -C "${SRC_DIR}"
fi

GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)

cmake -S "${UNPACKED}/vendor/llama.cpp" -B "${BUILD_DIR}" "${GENERATOR[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "${BUILD_DIR}" --target llama-server -j "${JOBS}" >&2

BUILT="$(find "${BUILD_DIR}" -type f -name llama-server -perm -u+x | head -n 1)"
[[ -n "${BUILT}" ]] || { echo "build-llama-server: no llama-server binary produced" >&2; exit 1; }
install -m 0755 "${BUILT}" "${BINARY}"
echo "${VERSION}" > "${STAMP}"
echo "${BINARY}"
