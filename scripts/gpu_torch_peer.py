#!/usr/bin/env python3
"""The PyTorch peer of scripts/gpu_check.sh (issue #16): fp32 matmul GFLOP/s and an eager fp32
GPT of the same shapes as scripts/gpu_bench.ts's training sizes, on the same GPU. Needs torch, and
bench/torch_peer.py for the GPT; TF32 is off so that it is the plain fp32 peer. Writes one JSON object.

    python3 scripts/gpu_torch_peer.py matmul --out F [--sizes 1024,4096,8192]
    python3 scripts/gpu_torch_peer.py train  --out F [--configs reference,gpt2-small,gpt2-medium]
                                             [--steps 3] [--warmup 2] [--smoke] [--device cuda]
"""
import argparse
import json
import os
import sys
import time

FP32_PEAK = 67e12  # H200 SXM plain fp32, FLOP/s (scripts/gpu_bench.ts FP32_PEAK)


def shapes(smoke):
    # Same as trainShapes() in scripts/gpu_bench.ts: (layers, hidden, heads, vocab, batch, seq).
    if smoke:
        return {
            "reference": (2, 64, 4, 256, 2, 32),
            "gpt2-small": (2, 64, 4, 512, 2, 32),
            "gpt2-medium": (2, 96, 4, 512, 1, 32),
        }
    return {
        "reference": (2, 128, 4, 256, 8, 64),
        "gpt2-small": (12, 768, 12, 50257, 4, 1024),
        "gpt2-medium": (24, 1024, 16, 50257, 2, 1024),
    }


def padded(v, multiple=128):
    return (v + multiple - 1) // multiple * multiple


def step_flops(L, h, V, B, T):
    # models/flops.ts: 3 * tokens * (L * (2*(4h^2 + 2*h*4h) + 4*T*h) + 2*h*Vpad)
    per_layer = 2 * (4 * h * h + 2 * h * 4 * h) + 2 * 2 * T * h
    return 3 * B * T * (L * per_layer + 2 * h * padded(V))


def sync(torch, dev):
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def bench_matmul(torch, dev, sizes):
    rows = []
    for n in sizes:
        row = {"n": n}
        try:
            a = torch.randn(n, n, device=dev)
            b = torch.randn(n, n, device=dev)
            c = a @ b
            sync(torch, dev)
            t0 = time.perf_counter()
            c = a @ b
            sync(torch, dev)
            first = time.perf_counter() - t0
            count = max(1, min(50, round(0.4 / max(first, 1e-6))))
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(count):
                    c = a @ b
                sync(torch, dev)
                times.append((time.perf_counter() - t0) / count)
            ms = sorted(times)[1] * 1000
            row.update(msPerMatmul=ms, gflops=2 * n**3 / (ms / 1000) / 1e9)
            del a, b, c
        except Exception as e:  # noqa: BLE001 - record and go on
            row["error"] = str(e).splitlines()[0] if str(e) else repr(e)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return {"rows": rows}


def build_gpt(torch, L, h, heads, V, T):
    # The same GPT as the CPU peer of bench/torch_compare.ts (bench/torch_peer.py: pre-LN, fused
    # QKV, eager causal attention, tanh GeLU, tied head), with the project's padded vocabulary.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
    from torch_peer import Gpt

    return Gpt(padded(V), L, h, heads, T)


def bench_train(torch, dev, names, steps, warmup, smoke):
    rows = []
    table = shapes(smoke)
    for name in names:
        if name not in table:
            rows.append({"name": name, "error": "unknown config"})
            continue
        L, h, heads, V, B, T = table[name]
        row = {"name": name, "batch": B, "seq": T,
               "model": {"numLayers": L, "hiddenSize": h, "numHeads": heads, "vocabSize": V}}
        try:
            torch.manual_seed(1)
            model = build_gpt(torch, L, h, heads, V, T).to(dev)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
            gen = torch.Generator(device="cpu").manual_seed(7)

            def step():
                x = torch.randint(0, V, (B, T), generator=gen).to(dev)
                y = torch.randint(0, V, (B, T), generator=gen).to(dev)
                opt.zero_grad(set_to_none=True)
                loss = model(x, y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                return loss.item()  # one sync per step, as the project reads its loss back

            t0 = time.perf_counter()
            for _ in range(warmup):
                step()
            row["warmupS"] = time.perf_counter() - t0
            ms, losses = [], []
            for _ in range(steps):
                t0 = time.perf_counter()
                losses.append(step())
                ms.append((time.perf_counter() - t0) * 1000)
            med = sorted(ms)[len(ms) // 2]
            flops = step_flops(L, h, V, B, T)
            row.update(
                params=sum(p.numel() for p in model.parameters()),
                msPerStep=med, stepsMs=ms, losses=losses, tokensPerS=B * T / (med / 1000),
                flopsPerStep=flops, tflops=flops / (med / 1000) / 1e12,
                mfu=flops / (med / 1000) / FP32_PEAK,
            )
            del model, opt
            if dev.startswith("cuda"):
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001
            row["error"] = str(e).splitlines()[0] if str(e) else repr(e)
        print(json.dumps({k: v for k, v in row.items() if k != "model"}), file=sys.stderr)
        rows.append(row)
    return {"rows": rows}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["matmul", "train"])
    p.add_argument("--out")
    p.add_argument("--sizes", default="1024,4096,8192")
    p.add_argument("--configs", default="reference,gpt2-small,gpt2-medium")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    a = p.parse_args()
    t0 = time.perf_counter()
    res = {"mode": a.mode, "smoke": a.smoke}
    try:
        import torch
        dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dev == "cpu" and not a.smoke and not a.device:
            raise RuntimeError("torch finds no CUDA device (pass --device cpu to run on the CPU)")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        res.update(torch=torch.__version__, device=dev,
                   deviceName=torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu")
        if a.mode == "matmul":
            res.update(bench_matmul(torch, dev, [int(s) for s in a.sizes.split(",")]))
        else:
            res.update(bench_train(torch, dev, a.configs.split(","), a.steps, a.warmup, a.smoke))
    except ImportError as e:
        res["skipped"] = f"no PyTorch here ({e})"
    except Exception as e:  # noqa: BLE001
        res["error"] = str(e).splitlines()[0] if str(e) else repr(e)
    res["seconds"] = time.perf_counter() - t0
    text = json.dumps(res, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
