"""PyTorch CPU peer for bench/torch_compare.ts: the same GPT training step and a
1024^3 sgemm, at 1 and 2 threads; prints one JSON object.

GPT: token + position embeddings, pre-LN blocks (causal attention with a fused
QKV projection, 4h GeLU-tanh MLP), final layer norm, LM head tied to the token
embedding, cross-entropy; AdamW (lr 1e-3, weight decay 0.01), global-norm clip
1.0, dropout off; fresh random tokens each step and the loss read back each step
(one sync, as the project's step does).

Usage: python3 bench/torch_peer.py '{"workloads": [{"name": ..., "vocab": ...,
"layers": ..., "hidden": ..., "heads": ..., "seq": ..., "batch": ...,
"warmup": 2, "steps": 10}], "threads": [1, 2], "sgemm": 1024}'
"""

import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, h, nh):
        super().__init__()
        self.nh = nh
        self.ln1 = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.proj = nn.Linear(h, h)
        self.ln2 = nn.LayerNorm(h)
        self.fc = nn.Linear(h, 4 * h)
        self.fc2 = nn.Linear(4 * h, h)

    def forward(self, x, mask):
        B, T, H = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(H, dim=2)
        shape = (B, T, self.nh, H // self.nh)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        s = (q @ k.transpose(-2, -1)) / math.sqrt(H // self.nh)
        p = s.masked_fill(mask[:T, :T], float("-inf")).softmax(-1)
        y = (p @ v).transpose(1, 2).reshape(B, T, H)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, vocab, layers, h, nh, seq):
        super().__init__()
        self.wte = nn.Embedding(vocab, h)
        self.wpe = nn.Embedding(seq, h)
        self.blocks = nn.ModuleList(Block(h, nh) for _ in range(layers))
        self.lnf = nn.LayerNorm(h)
        self.register_buffer("mask", torch.ones(seq, seq, dtype=torch.bool).triu(1))
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.blocks:
            x = b(x, self.mask)
        logits = self.lnf(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def train_tokens_per_s(w, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = Gpt(w["vocab"], w["layers"], w["hidden"], w["heads"], w["seq"])
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(7)
    shape = (w["batch"], w["seq"])
    times = []
    for i in range(w["warmup"] + w["steps"]):
        t0 = time.perf_counter()
        idx = torch.randint(w["vocab"], shape, generator=g)
        tgt = torch.randint(w["vocab"], shape, generator=g)
        loss = m(idx, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        loss.item()
        if i >= w["warmup"]:
            times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in m.parameters())
    return {"tokensPerSec": shape[0] * shape[1] / statistics.median(times), "params": params}


def sgemm_gflops(n, threads, reps=8):
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def main():
    spec = json.loads(sys.argv[1])
    threads = spec.get("threads", [1, 2])
    out = {"torch": torch.__version__, "threads": threads, "workloads": {}, "sgemm": {}}
    for w in spec.get("workloads", []):
        out["workloads"][w["name"]] = {str(t): train_tokens_per_s(w, t) for t in threads}
    if spec.get("sgemm"):
        out["sgemm"] = {str(t): sgemm_gflops(spec["sgemm"], t) for t in threads}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
