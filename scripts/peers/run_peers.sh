#!/usr/bin/env bash
# Peers side by side (not part of CI): install bespokelabs-curator and distilabel in venvs of
# their own (never foldem's dependencies: curator downgrades openai and pandas), then have each
# generate the benchmark's prompts in full against the replay endpoint and filter the outputs
# with foldem's validators. Writes DIR/peers.json.
#
#   scripts/peers/run_peers.sh DIR [TRACE_FILE...]     (default traces: all shared files)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:?usage: run_peers.sh DIR [TRACE_FILE...]}"; shift || true
traces=("$@")
if [ ${#traces[@]} -eq 0 ]; then
  traces=(data://traces/gsm8k_gpt3_dev.jsonl data://traces/processbench_gsm8k.jsonl
          data://traces/processbench_math.jsonl)
fi
venvs="${FOLDEM_PEERS_VENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/foldem-peers}"
mkdir -p "$venvs"
make_venv() {  # name, pip requirements...
  local name="$1"; shift
  if [ ! -f "$venvs/$name/.installed" ]; then
    python3 -m venv "$venvs/$name"
    "$venvs/$name/bin/pip" install --quiet "$@"
    touch "$venvs/$name/.installed"
  fi
}
make_venv curator "bespokelabs-curator==0.1.31"
make_venv distilabel "distilabel[openai]==1.5.3" requests
# Offline settings the peers need (STACK.md); curator needs the seeded tiktoken cache.
export TELEMETRY_ENABLED=false LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1
"$root/.venv/bin/python" -c "from foldem.core.tokens import seed_cache; seed_cache(); seed_cache('cl100k_base')" >/dev/null
export TIKTOKEN_CACHE_DIR="${TIKTOKEN_CACHE_DIR:-$("$root/.venv/bin/python" -c \
  'from foldem.core.tokens import _cache_dir; print(_cache_dir())')}"
cd "$root"
exec .venv/bin/python scripts/peers/run_peers.py --traces "${traces[@]}" --out "$out" \
  --venvs "$venvs"
