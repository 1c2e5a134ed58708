"""An independent GPT-2 training loop in PyTorch, for tests/torch_train_test.ts.

Written from PyTorch's and Megatron-LM's documented semantics; nothing here is
shared with the project (the safetensors reader of tests/torch_gpt2_eval.py, its
own batched GPT-2 forward in float64):

- model: GPT-2 (pre-LN blocks, tanh GeLU, causal attention scaled by
  1/sqrt(head size), tied LM head), dropout off;
- loss: each micro-batch's mean next-token cross-entropy over its B·T tokens;
  gradient accumulation backpropagates loss_i / n_micro for each of the step's
  n_micro micro-batches (Megatron's averaging), and the step's reported loss is
  the mean of the loss_i;
- clipping: torch.nn.utils.clip_grad_norm_ over every parameter (the tied
  embedding once), which returns the norm before clipping (Megatron's
  clip_grad_norm_fp32 has the same coefficient, max_norm / (norm + 1e-6),
  capped at 1);
- optimizer: torch.optim.AdamW with Megatron's two parameter groups: no weight
  decay for biases and 1-D parameters (layer-norm gains and biases), the rest
  (matrices and both embeddings) decayed;
- learning rate: Megatron's OptimizerParamScheduler.get_lr, with the lengths
  get_optimizer_param_scheduler gives it: at iteration k (1-based) the
  scheduler has counted num_steps = (k − 1)·G samples (it steps by the global
  batch G after each successful update), the decay length is
  decay = decay_iters·G, the warm-up warmup_fraction·decay when the job gives
  a fraction (--lr-warmup-fraction) and warmup_iters·G otherwise, init_lr is
  warmup_init (--lr-warmup-init, default 0), and
      num_steps <= warmup:        lr = init_lr + (max_lr − init_lr) · num_steps / warmup
      num_steps >  decay:         lr = min_lr
      otherwise, r = (num_steps − warmup) / (decay − warmup),
                 lr = min_lr + (max_lr − min_lr) · c,
                 c = 1 − r (linear) or (1 + cos(π r)) / 2 (cosine).
  The job may instead give `lr_applied`, one learning rate per iteration, which
  the loop then uses (the schedule is still computed and reported, and the same
  steps are run a second time with it, for their losses).

Usage: python3 torch_gpt_train.py INIT_HF_DIR FINAL_HF_DIR JOB.json

JOB.json: {"ids": training token ids, "starts": [iteration][micro-batch][row]
window starts (row r of a micro-batch reads ids[s : s + T + 1]), "seq_length",
"hp": {"lr", "min_lr", "warmup_iters" or "warmup_fraction", optional "warmup_init",
"decay_iters", "decay_style", "weight_decay", "beta1", "beta2", "eps" (AdamW's, as
--adam-eps), "clip_grad"}, optional "lr_applied"}.

Prints one JSON line: per iteration the reference's loss, gradient norm (before
clipping), clipping coefficient and learning rates (Megatron's schedule, and the
one applied), and the losses under Megatron's schedule; per tensor of
FINAL_HF_DIR the largest |final − reference|, the largest |reference| and the
largest |reference − initial| (how far training moved it); the attention's
query, key and value biases are reported apart.
"""

import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt2_eval import read_safetensors  # noqa: E402  (float64)

DTYPE = torch.float64


def strip(name):
    return name[len("transformer.") :] if name.startswith("transformer.") else name


def read_hf(dir_):
    with open(f"{dir_}/config.json") as f:
        cfg = json.load(f)
    tensors = {strip(k): v for k, v in read_safetensors(f"{dir_}/model.safetensors").items()}
    # Buffers and the tied head are not parameters.
    tensors = {
        k: v
        for k, v in tensors.items()
        if k != "lm_head.weight" and not k.endswith(".attn.bias") and not k.endswith("masked_bias")
    }
    return cfg, tensors


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def logits_of(w, cfg, ids):
    """Logits [B, T, vocab] of ids [B, T]."""
    B, T = ids.shape
    C, H, eps = cfg["n_embd"], cfg["n_head"], cfg.get("layer_norm_epsilon", 1e-5)
    D = C // H
    x = w["wte.weight"][ids] + w["wpe.weight"][:T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()

    def ln(v, p):
        return torch.nn.functional.layer_norm(v, (C,), w[p + ".weight"], w[p + ".bias"], eps)

    for i in range(cfg["n_layer"]):
        p = f"h.{i}"
        h = ln(x, p + ".ln_1")
        qkv = h @ w[p + ".attn.c_attn.weight"] + w[p + ".attn.c_attn.bias"]  # Conv1D: [in, out]
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=-1))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        s = s.masked_fill(~causal, float("-inf"))
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + a @ w[p + ".attn.c_proj.weight"] + w[p + ".attn.c_proj.bias"]
        h = ln(x, p + ".ln_2")
        m = gelu_tanh(h @ w[p + ".mlp.c_fc.weight"] + w[p + ".mlp.c_fc.bias"])
        x = x + m @ w[p + ".mlp.c_proj.weight"] + w[p + ".mlp.c_proj.bias"]
    x = ln(x, "ln_f")
    return x @ w["wte.weight"].T


def megatron_lr(k, hp, global_batch):
    """Megatron's get_lr at iteration k (1-based), counted in samples as Megatron does."""
    num_steps = (k - 1) * global_batch
    decay = hp["decay_iters"] * global_batch
    if hp.get("warmup_fraction") is not None:
        warmup = hp["warmup_fraction"] * decay
    else:
        warmup = hp["warmup_iters"] * global_batch
    max_lr, min_lr, init_lr = hp["lr"], hp["min_lr"], hp.get("warmup_init", 0.0)
    if warmup > 0 and num_steps <= warmup:
        return init_lr + (max_lr - init_lr) * float(num_steps) / float(warmup)
    if hp["decay_style"] == "constant":
        return max_lr
    if num_steps > decay:
        return min_lr
    ratio = float(num_steps - warmup) / float(decay - warmup)
    if hp["decay_style"] == "linear":
        coeff = 1.0 - ratio
    elif hp["decay_style"] == "cosine":
        coeff = 0.5 * (math.cos(math.pi * ratio) + 1.0)
    else:
        raise SystemExit(f"decay style {hp['decay_style']}")
    return min_lr + coeff * (max_lr - min_lr)


def train(init, cfg, ids, T, iters, hp, lr_applied):
    """The steps of `iters` ([iteration][micro-batch][row] window starts) from weights `init`."""
    params = {k: v.clone().requires_grad_(True) for k, v in init.items()}
    # Megatron's default no-weight-decay rule: biases and 1-D parameters.
    no_wd = [p for n, p in params.items() if n.endswith(".bias") or p.dim() == 1]
    wd = [p for n, p in params.items() if not (n.endswith(".bias") or p.dim() == 1)]
    opt = torch.optim.AdamW(
        [
            {"params": wd, "weight_decay": hp["weight_decay"]},
            {"params": no_wd, "weight_decay": 0.0},
        ],
        lr=0.0,
        betas=(hp["beta1"], hp["beta2"]),
        eps=hp["eps"],
    )
    losses, norms, coefs, sched, applied = [], [], [], [], []
    for k, micro in enumerate(iters, start=1):
        n_micro = len(micro)
        global_batch = sum(len(rows) for rows in micro)
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for rows in micro:
            x = torch.stack([ids[s : s + T] for s in rows])
            y = torch.stack([ids[s + 1 : s + T + 1] for s in rows])
            logits = logits_of(params, cfg, x)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
            )
            (loss / n_micro).backward()
            step_loss += float(loss) / n_micro
        norm = float(torch.nn.utils.clip_grad_norm_(list(params.values()), hp["clip_grad"]))
        lr_sched = megatron_lr(k, hp, global_batch)
        lr = lr_applied[k - 1] if lr_applied is not None else lr_sched
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        losses.append(step_loss)
        norms.append(norm)
        coefs.append(min(1.0, hp["clip_grad"] / (norm + 1e-6)))
        sched.append(lr_sched)
        applied.append(lr)
    return {
        "params": params,
        "loss": losses,
        "grad_norm": norms,
        "clip_coef": coefs,
        "lr_megatron": sched,
        "lr_applied": applied,
    }


def main():
    init_dir, final_dir, job_path = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    with open(job_path) as f:
        job = json.load(f)
    hp, T = job["hp"], job["seq_length"]
    cfg, init = read_hf(init_dir)
    ids = torch.tensor(job["ids"], dtype=torch.long)
    run = train(init, cfg, ids, T, job["starts"], hp, job.get("lr_applied"))
    # The same steps with Megatron's schedule, where the job gave other learning rates: how far
    # the losses go apart.
    alt = train(init, cfg, ids, T, job["starts"], hp, None) if "lr_applied" in job else run
    params = run["params"]

    _, final = read_hf(final_dir)
    missing = sorted(set(final) ^ set(params))
    if missing:
        raise SystemExit(f"tensors in one file only: {missing}")
    C = cfg["n_embd"]
    tensors = {}
    for name, p in params.items():
        ref, ours, start = p.detach(), final[name], init[name]
        parts = [(name, slice(None))]
        if name.endswith(".attn.c_attn.bias"):
            # The key bias's gradient is zero in exact arithmetic (a constant added to every
            # score of a query row): reported apart.
            parts = [(f"{name}[{w}]", slice(i * C, (i + 1) * C)) for i, w in enumerate("qkv")]
        for label, sl in parts:
            r, o, s = ref[..., sl], ours[..., sl], start[..., sl]
            tensors[label] = {
                "err": float((o - r).abs().max()),
                "ref": float(r.abs().max()),
                "moved": float((r - s).abs().max()),
            }
    print(
        json.dumps(
            {
                "loss": run["loss"],
                "grad_norm": run["grad_norm"],
                "clip_coef": run["clip_coef"],
                "lr_megatron": run["lr_megatron"],
                "lr_applied": run["lr_applied"],
                "loss_megatron_schedule": alt["loss"],
                "tensors": tensors,
            }
        )
    )


if __name__ == "__main__":
    main()
