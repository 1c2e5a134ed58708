"""PyTorch autograd's gradients of a GPT-2's loss against given ones, for tests/torch_reference_test.ts.

Reads the weights (a Hugging Face GPT-2 directory), the gradients to check (a
second such directory whose tensors are gradients, same names and layouts) and
a batch (JSON: B, T, ids, targets; the loss is the mean next-token cross-entropy
over the B·T positions). Computes the loss and every gradient in float64 with
the forward pass of torch_gpt2_eval.py, and prints one JSON line: the loss, and
for each compared set the worst element's ratio

    |g − ref| / (atol_of_max·G + rtol·|ref|),   G = the largest |ref| of the set

(≤ 1 passes), its error and G. Sets: every tensor against the model-wide G, and
the token table's rows that are neither inputs nor targets against their own G
(they get only the head's small p·y/N part, which the model-wide atol would
hide).

Usage: python3 torch_gpt2_grads.py HF_DIR GRADS_DIR BATCH.json ATOL_OF_MAX RTOL
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt2_eval import forward, read_safetensors  # noqa: E402


def worst(ours, ref, atol_of_max, rtol):
    g = float(ref.abs().max())
    err = (ours - ref).abs()
    ratio = err / (atol_of_max * g + rtol * ref.abs())
    i = int(ratio.argmax())
    return {"ratio": float(ratio.flatten()[i]), "err": float(err.max()), "G": g}


def main():
    hf, grads_dir, batch_path = sys.argv[1], sys.argv[2], sys.argv[3]
    atol_of_max, rtol = float(sys.argv[4]), float(sys.argv[5])
    with open(f"{hf}/config.json") as f:
        cfg = json.load(f)
    with open(batch_path) as f:
        batch = json.load(f)
    B, T = batch["B"], batch["T"]
    ids = torch.tensor(batch["ids"], dtype=torch.long).reshape(B, T)
    targets = torch.tensor(batch["targets"], dtype=torch.long).reshape(B, T)
    w = read_safetensors(f"{hf}/model.safetensors")
    for t in w.values():
        t.requires_grad_(True)
    loss = sum(
        torch.nn.functional.cross_entropy(forward(w, cfg, ids[b]), targets[b], reduction="sum")
        for b in range(B)
    ) / (B * T)
    loss.backward()
    ours = read_safetensors(f"{grads_dir}/model.safetensors")
    missing = sorted(set(w) ^ set(ours))
    if missing:
        raise SystemExit(f"tensors in one file only: {missing}")
    g_all = max(float(t.grad.abs().max()) for t in w.values())
    sets = {}
    for name, t in w.items():
        err = (ours[name] - t.grad).abs()
        ratio = err / (atol_of_max * g_all + rtol * t.grad.abs())
        sets[name] = {"ratio": float(ratio.max()), "err": float(err.max()), "G": g_all}
    table = "transformer.wte.weight"
    used = torch.zeros(cfg["vocab_size"], dtype=torch.bool)
    used[ids.flatten()] = True
    used[targets.flatten()] = True
    sets[f"{table} rows outside the batch"] = worst(
        ours[table][~used], w[table].grad[~used], atol_of_max, rtol
    )
    print(json.dumps({"loss": float(loss), "sets": sets}))


if __name__ == "__main__":
    main()
