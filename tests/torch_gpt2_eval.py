"""An independent GPT-2 forward pass in PyTorch, for tests/torch_reference_test.ts.

Reads a Hugging Face GPT-2 directory (config.json + model.safetensors, as
`deno task export-hf` writes it) with its own safetensors parser, and a .bin of
little-endian uint16 token ids; prints one JSON line: the mean next-token loss
over every full, non-overlapping window of `seq` tokens, in float64 (the
definition `deno task eval` documents), and the greedy continuation of the
prompt PROMPT.bin by NEW tokens, each with its margin (top logit minus the
runner-up).

Usage: python3 torch_gpt2_eval.py HF_DIR TOKENS.bin SEQ PROMPT.bin NEW
Nothing here is shared with the project's code: the model is written from
GPT-2's published structure (pre-LN blocks, tanh GeLU, tied head).
"""

import json
import math
import struct
import sys

import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit(f"{name}: dtype {t['dtype']}, expected F32")
        a, b = t["data_offsets"]
        buf = bytearray(body[a:b])
        out[name] = torch.frombuffer(buf, dtype=torch.float32).reshape(t["shape"]).double()
    return out


def forward(w, cfg, ids):
    """Logits [T, vocab] of one sequence `ids` (a 1-D LongTensor)."""
    T = ids.shape[0]
    H = cfg["n_head"]
    C = cfg["n_embd"]
    eps = cfg["layer_norm_epsilon"]
    x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][:T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()

    def ln(x, p):
        return torch.nn.functional.layer_norm(x, (C,), w[p + ".weight"], w[p + ".bias"], eps)

    def gelu_new(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}"
        h = ln(x, p + ".ln_1")
        qkv = h @ w[p + ".attn.c_attn.weight"] + w[p + ".attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=1)
        q, k, v = (t.reshape(T, H, C // H).transpose(0, 1) for t in (q, k, v))
        s = (q @ k.transpose(1, 2)) / math.sqrt(C // H)
        s = s.masked_fill(~causal, float("-inf"))
        a = (s.softmax(-1) @ v).transpose(0, 1).reshape(T, C)
        x = x + a @ w[p + ".attn.c_proj.weight"] + w[p + ".attn.c_proj.bias"]
        h = ln(x, p + ".ln_2")
        m = gelu_new(h @ w[p + ".mlp.c_fc.weight"] + w[p + ".mlp.c_fc.bias"])
        x = x + m @ w[p + ".mlp.c_proj.weight"] + w[p + ".mlp.c_proj.bias"]
    x = ln(x, "transformer.ln_f")
    return x @ w["transformer.wte.weight"].T


def read_bin(path):
    with open(path, "rb") as f:
        data = f.read()
    return torch.tensor(struct.unpack(f"<{len(data) // 2}H", data), dtype=torch.long)


def main():
    hf, bin_path, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
    prompt_path, new = sys.argv[4], int(sys.argv[5])
    with open(f"{hf}/config.json") as f:
        cfg = json.load(f)
    w = read_safetensors(f"{hf}/model.safetensors")
    ids = read_bin(bin_path)
    # Windows of seq + 1 tokens, stepping by seq: inputs and their next tokens.
    windows = (len(ids) - 1) // seq
    total, count = 0.0, 0
    with torch.no_grad():
        for n in range(windows):
            x = ids[n * seq : n * seq + seq]
            y = ids[n * seq + 1 : n * seq + seq + 1]
            logits = forward(w, cfg, x)
            total += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
            count += seq
        context = read_bin(prompt_path)
        greedy, margins = [], []
        for _ in range(new):
            top = forward(w, cfg, context)[-1].topk(2)
            greedy.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            context = torch.cat([context, top.indices[:1]])
    print(json.dumps({"loss": total / count, "tokens": count, "windows": windows,
                      "greedy": greedy, "margins": margins, "vocab": cfg["vocab_size"]}))


if __name__ == "__main__":
    main()
