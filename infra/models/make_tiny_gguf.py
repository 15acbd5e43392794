#!/usr/bin/env python3
"""Write a tiny random-weight LLaMA-architecture model as a GGUF file, for a real model server
(llama.cpp's `llama-server`) on a CPU without downloading anything.

    python infra/models/make_tiny_gguf.py        # -> ~/.cache/foldem/models/tiny-llama.gguf
    python infra/models/make_tiny_gguf.py --out model.gguf --layers 4 --hidden 128

The text it writes is nonsense (made-up words, digits and a few math symbols, with line breaks);
the server around it — streaming, usage, slots, aborts — is real. Needs the `gguf` package
(`pip install gguf`; an optional dependency of foldem). Deterministic for a given --seed.

Two things keep it usable as a test server:
* Any prompt tokenizes: the vocabulary is SentencePiece-style with the 256 `<0xXX>` byte tokens.
* A request runs to `max_tokens`: every token embedding carries a constant in dimension 0 that
  no layer writes to, so after the final norm that dimension is a large positive constant, and
  the output rows of control tokens (`</s>` …) and of non-newline byte tokens carry a large
  negative weight there. EOS is never sampled and no stray bytes make invalid UTF-8.
* Lines end: the newline byte gets a positive weight there, so step checkpoints fire.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path.home() / ".cache" / "foldem" / "models" / "tiny-llama.gguf"

# Made-up word pieces. "▁" (U+2581) marks a leading space, as in SentencePiece.
WORDS = (
    "the a of and to in is it that was for on are as with his they at be this from have or by "
    "one had not but what all were when we there can an your which their said if do will each "
    "about how up out them then she many some so these would other into has more her two like "
    "him see time could no make than first been its who now people my made over did down only "
    "way find use may water long little very after words called just where most know step "
    "total sum cost price apples books hours miles dollars each per left more less half twice "
    "answer so therefore thus first second third then finally number numbers result equals"
).split()
SYMBOLS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "-", "*", "/", "=", "$", ".",
           ",", ":", "####"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
NEWLINE_BYTE = "<0x0A>"
#: Weight of the newline on the constant dimension: ~5% of tokens end a line, so step
#: checkpoints ("\n") fire while a reply streams.
NEWLINE_WEIGHT = 0.2


def build_vocab() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types: <unk> <s> </s>, 256 bytes, then word pieces."""
    import gguf

    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces: list[str] = []
    for word in WORDS:
        pieces += [f"▁{word}", word]
    for sym in SYMBOLS:
        pieces += [f"▁{sym}", sym]
    pieces += [c for c in "abcdefghijklmnopqrstuvwxyz"] + ["▁"]
    seen = set(tokens)
    for piece in pieces:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(gguf.TokenType.NORMAL)
    # SentencePiece scores: longer pieces win when the tokenizer merges.
    scores = [0.0 if t != gguf.TokenType.NORMAL else -1.0 / len(tok)
              for tok, t in zip(tokens, types, strict=True)]
    return tokens, scores, [int(t) for t in types]


def write_model(out: Path, *, hidden: int, layers: int, ff: int, heads: int, context: int,
                seed: int) -> Path:
    import gguf

    if hidden % heads:
        raise SystemExit(f"--hidden ({hidden}) must be a multiple of --heads ({heads})")
    tokens, scores, types = build_vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def weights(*shape: int, std: float = 0.02) -> np.ndarray:
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name("foldem-tiny-random-llama")
    writer.add_context_length(context)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    # Dimension 0 of the residual stream is a constant: set in every embedding, never written.
    embed = weights(n_vocab, hidden)
    embed[:, 0] = 1.0
    writer.add_tensor("token_embd.weight", embed)
    for i in range(layers):
        prefix = f"blk.{i}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v"):
            writer.add_tensor(f"{prefix}.{name}.weight", weights(hidden, hidden))
        attn_out = weights(hidden, hidden)
        attn_out[0, :] = 0.0  # no write into the constant dimension
        writer.add_tensor(f"{prefix}.attn_output.weight", attn_out)
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weights(ff, hidden))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weights(ff, hidden))
        ffn_down = weights(hidden, ff)
        ffn_down[0, :] = 0.0
        writer.add_tensor(f"{prefix}.ffn_down.weight", ffn_down)
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    # Output rows: varied logits for word pieces (some structure to sample from), zero weight on
    # the constant dimension for them, a large negative one for tokens that must never come.
    output = weights(n_vocab, hidden, std=0.5)
    output[:, 0] = 0.0
    banned = [i for i, (tok, t) in enumerate(zip(tokens, types, strict=True))
              if t != int(gguf.TokenType.NORMAL) and tok != NEWLINE_BYTE]
    output[banned, 0] = -8.0
    output[tokens.index(NEWLINE_BYTE), 0] = NEWLINE_WEIGHT
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)  # atomic: a server never loads a half-written file
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--ff", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rewrite an existing file")
    args = parser.parse_args(argv)
    try:
        import gguf  # noqa: F401
    except ImportError:
        print("make_tiny_gguf: the `gguf` package is missing: pip install gguf", file=sys.stderr)
        return 2
    if args.out.exists() and not args.force:
        print(args.out)
        return 0
    path = write_model(args.out, hidden=args.hidden, layers=args.layers, ff=args.ff,
                       heads=args.heads, context=args.context, seed=args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
