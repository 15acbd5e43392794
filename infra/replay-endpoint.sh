#!/usr/bin/env bash
# Launch the replay endpoint (recorded real generations played back over the OpenAI streaming API)
# for demos, benchmarks and checking third-party clients. Jobs whose endpoint says
# `base_url: replay` start their own; use this to share one between runs or tools.
#
#   infra/replay-endpoint.sh [PORT] [TOKENS_PER_SECOND]      # default 8000, 50
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
port="${1:-8000}"
pace="${2:-50}"
exec "$here/.venv/bin/foldem" replay serve \
  --traces data://traces/gsm8k_gpt3_dev.jsonl data://traces/processbench_gsm8k.jsonl \
           data://traces/processbench_math.jsonl \
  --host 127.0.0.1 --port "$port" --tokens-per-second "$pace"
