#!/usr/bin/env python3
"""Builds scripts/gpu_check.sh's report: one JSON and one Markdown file from its scratch folder
(steps.tsv, env.txt, res/*.json, logs/*.log). Standard library only.

    python3 scripts/gpu_report.py WORK_DIR OUT_DIR
"""
import json
import os
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TARGETS = {"matmul_vs_torch_4096": 0.5, "train_vs_torch": 0.5, "scaling_8_ranks": 0.77}


def read(path, default=""):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return default


def load_json(path):
    text = read(path)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"error": "unreadable JSON"}


def fmt(v, d=1):
    if v is None or isinstance(v, str):
        return "–" if v is None else v
    try:
        return f"{v:,.{d}f}"
    except (TypeError, ValueError):
        return str(v)


def test_counts(log):
    text = ANSI.sub("", log)
    passed = failed = 0
    for m in re.finditer(r"\| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed", text):
        passed += int(m.group(1))
        failed += int(m.group(2))
    files = re.findall(r"^  (tests/\S+ \(exit \d+\))$", text, re.M)
    ran = sorted(set(re.findall(r"running \d+ tests? from \./(tests/\S+)", text)))
    return {"passed": passed, "failed": failed, "failedFiles": files, "files": ran}


def main():
    work, out = sys.argv[1], sys.argv[2]
    env = dict(
        line.split("=", 1) for line in read(os.path.join(work, "env.txt")).splitlines() if "=" in line
    )
    steps = []
    for line in read(os.path.join(work, "steps.tsv")).splitlines():
        p = (line.split("\t") + [""] * 6)[:6]
        steps.append({"name": p[0], "status": p[1], "rc": p[2], "seconds": float(p[3] or 0),
                      "limit": p[4], "note": p[5]})
    res = {}
    for name in ("probe", "matmul-dawn", "matmul-deno", "matmul-torch", "train-dawn",
                 "train-deno", "train-torch", "tp2", "scaling"):
        r = load_json(os.path.join(work, "res", f"{name}.json"))
        if r is not None:
            res[name] = r
    logs = {s["name"]: read(os.path.join(work, "logs", s["name"] + ".log")) for s in steps}
    tests = {n: test_counts(logs.get(n, "")) for n in ("tests-dawn", "tests-dawn-software", "tests-dawn-gpu", "tests-deno")
             if any(s["name"] == n and s["status"] != "skipped" for s in steps)}

    # Matmul: GFLOP/s per size and variant, beside torch.
    torch_mm = {r["n"]: r.get("gflops") for r in (res.get("matmul-torch") or {}).get("rows", [])}
    matmul = []
    for b in ("dawn", "deno"):
        for r in (res.get(f"matmul-{b}") or {}).get("rows", []):
            t = torch_mm.get(r["n"])
            g = r.get("gflops")
            matmul.append({"backend": b, "n": r["n"], "variant": r["variant"], "gflops": g,
                           "error": r.get("error"), "torchGflops": t,
                           "vsTorch": g / t if g and t else None})
    # Training: project beside torch.
    torch_tr = {r["name"]: r for r in (res.get("train-torch") or {}).get("rows", [])}
    train = []
    # Dawn's rows, or Deno's WebGPU's where the check fell back to it.
    project = res.get("train-dawn") or {}
    if not any(r.get("msPerStep") for r in project.get("rows", [])) and res.get("train-deno"):
        project = res["train-deno"]
    for r in project.get("rows", []):
        t = torch_tr.get(r["name"], {})
        train.append({
            "backend": project.get("backend"), "name": r["name"], "batch": r.get("batch"), "seq": r.get("seq"),
            "params": r.get("params"), "msPerStep": r.get("msPerStep"),
            "tokensPerS": r.get("tokensPerS"), "mfu": r.get("mfu"), "error": r.get("error"),
            "torchMsPerStep": t.get("msPerStep"), "torchTokensPerS": t.get("tokensPerS"),
            "torchMfu": t.get("mfu"), "torchError": t.get("error"),
            "vsTorch": (r["tokensPerS"] / t["tokensPerS"])
            if r.get("tokensPerS") and t.get("tokensPerS") else None,
            "losses": r.get("losses"), "torchLosses": t.get("losses"),
        })
    cli = []
    for line in read(os.path.join(work, "res", "train-cli.jsonl")).splitlines():
        try:
            cli.append(json.loads(line))
        except ValueError:
            pass
    train_cli = None
    cli = [r for r in cli if "loss" in r]
    if cli:
        tps = sorted(r["tokens_per_s"] for r in cli if r.get("tokens_per_s"))
        vals = [r["val_loss"] for r in cli if "val_loss" in r]
        train_cli = {"iterations": cli[-1].get("iteration"), "firstLoss": cli[0].get("loss"),
                     "lastLoss": cli[-1].get("loss"), "valLoss": vals[-1] if vals else None,
                     "medianTokensPerS": tps[len(tps) // 2] if tps else None}
    scaling_rows = (res.get("scaling") or {}).get("rows", [])
    tp2_rows = (res.get("tp2") or {}).get("rows", [])

    # The issue's targets (measured against whatever ran; the smoke sizes are not the targets').
    def pick(rows, **kw):
        return next((r for r in rows if all(r.get(k) == v for k, v in kw.items())), None)
    big = max((r["n"] for r in matmul), default=None)
    ok_mm = [r for r in matmul if r.get("gflops")]
    mm = next((pick(ok_mm, backend=b, n=n, variant="gpu") for n in (4096, big) for b in ("dawn", "deno")
               if pick(ok_mm, backend=b, n=n, variant="gpu")), None)
    s8 = next((r for r in scaling_rows if r.get("config", {}).get("ranks") == 8), None)
    targets = {
        "matmul": {"what": "WGSL (gpu variant) / PyTorch fp32 GFLOP/s at 4096³", "n": mm and mm["n"],
                   "backend": mm and mm["backend"],
                   "ratio": mm and mm["vsTorch"], "target": TARGETS["matmul_vs_torch_4096"]},
        "train": [{"what": f"{n} tokens/s vs PyTorch eager fp32", "ratio": (pick(train, name=n) or {}).get("vsTorch"),
                   "target": TARGETS["train_vs_torch"]} for n in ("reference", "gpt2-small")],
        "scaling": {"what": "weak-scaling efficiency at 8 ranks", "efficiency": s8 and s8.get("efficiency"),
                    "target": TARGETS["scaling_8_ranks"]},
    }
    probe = res.get("probe") or {}
    report = {
        "smoke": env.get("smoke") == "1", "gpu": env.get("gpu") == "1", "env": env,
        "steps": steps, "adapters": {k: probe.get(k) for k in ("dawn", "deno")},
        "dawnF16Toggle": probe.get("dawnF16Toggle"), "tests": tests, "matmul": matmul,
        "matmulTorch": res.get("matmul-torch"), "train": train, "trainCli": train_cli, "tp2": tp2_rows,
        "scaling": scaling_rows, "targets": targets,
        "errors": {k: v.get("error") or v.get("skipped") for k, v in res.items()
                   if isinstance(v, dict) and (v.get("error") or v.get("skipped"))},
    }
    with open(os.path.join(out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=1)

    md = ["# GPU check (scripts/gpu_check.sh)", ""]
    md.append(f"- commit {env.get('commit', '?')}; {'SMOKE (tiny sizes)' if report['smoke'] else 'full sizes'}; "
              f"NVIDIA ICD: {env.get('VK_DRIVER_FILES') or 'none'}; {env.get('loader', '')}; "
              f"unpack {env.get('unpack_s', '?')} s; total {env.get('total_s', '?')} s of a {env.get('budget_s', '?')} s budget")
    for b in ("dawn", "deno"):
        a = probe.get(b) or {}
        if a.get("error"):
            md.append(f"- {b}: no adapter: {a['error']}")
        elif a:
            lim = a.get("limits", {})
            md.append(f"- {b}: {a.get('name')}{' [software]' if a.get('isFallback') else ''}; "
                      f"features {', '.join(a.get('features', [])) or '(none)'}; "
                      f"maxStorageBufferBindingSize {lim.get('maxStorageBufferBindingSize')}, "
                      f"maxBufferSize {lim.get('maxBufferSize')}")
    tog = probe.get("dawnF16Toggle") or {}
    if tog:
        d, t = tog.get("default") or {}, tog.get("vulkan_enable_f16_on_nvidia") or {}
        md.append(f"- Dawn shader-f16: {d.get('shaderF16', d.get('error', tog.get('error')))} by default, "
                  f"{t.get('shaderF16', t.get('error', tog.get('error')))} with the toggle vulkan_enable_f16_on_nvidia")
    md += ["", "## Steps", "", "| step | status | s | limit s | note |", "| --- | --- | ---: | ---: | --- |"]
    for s in steps:
        md.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['limit']} | {s['note']} |")
    if tests:
        md += ["", "## Tests (kernel, gradient, TP equivalence)", ""]
        for n, c in tests.items():
            md.append(f"- {n}: {c['passed']} passed, {c['failed']} failed"
                      + (f"; failing files: {', '.join(c['failedFiles'])}" if c["failedFiles"] else ""))
    if matmul:
        md += ["", "## Matmul fp32 (C = A·B, n×n×n)", "",
               "| backend | n | variant | GFLOP/s | PyTorch GFLOP/s | vs PyTorch |", "| --- | ---: | --- | ---: | ---: | ---: |"]
        for r in matmul:
            g = r["gflops"] if not r["error"] else f"failed: {r['error']}"
            md.append(f"| {r['backend']} | {r['n']} | {r['variant']} | {fmt(g, 0)} | {fmt(r['torchGflops'], 0)} | "
                      f"{fmt(r['vsTorch'], 2)} |")
    if train:
        md += ["", f"## GPT training steps (fp32, project on {train[0].get('backend')}; "
               "MFU vs the 67 TFLOP/s fp32 peak)", "",
               "| config | B×T | params | ms/step | tokens/s | MFU | PyTorch ms/step | PyTorch tokens/s | PyTorch MFU | vs PyTorch |",
               "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in train:
            ms = r["msPerStep"] if not r["error"] else f"failed: {r['error']}"
            tms = r["torchMsPerStep"] if not r["torchError"] else f"failed: {r['torchError']}"
            md.append(f"| {r['name']} | {r['batch']}×{r['seq']} | {fmt(r['params'], 0)} | {fmt(ms)} | "
                      f"{fmt(r['tokensPerS'], 0)} | {fmt(r['mfu'] and 100 * r['mfu'], 2)}% | {fmt(tms)} | "
                      f"{fmt(r['torchTokensPerS'], 0)} | {fmt(r['torchMfu'] and 100 * r['torchMfu'], 2)}% | "
                      f"{fmt(r['vsTorch'], 2)} |")
    if train_cli:
        c = train_cli
        md += ["", "## deno task train on Moby Dick (default config)", "",
               f"{c['iterations']} iterations: loss {fmt(c['firstLoss'], 3)} → {fmt(c['lastLoss'], 3)}, "
               f"validation {fmt(c['valLoss'], 3)}, median {fmt(c['medianTokensPerS'], 0)} tokens/s"]
    for title, key in (("TP=2 on two devices of one adapter vs TP=1", "tp2"),
                       ("Weak-scaling ladder", "scaling")):
        r = res.get(key) or {}
        if r.get("table") or r.get("error"):
            md += ["", f"## {title}", ""]
            if key == "tp2":
                for n, c in tests.items():
                    bad = [f for f in c["failedFiles"] if "/tp_" in f]
                    ran = [f for f in c.get("files", []) if "/tp_" in f]
                    state = ("FAILED: " + ", ".join(bad)) if bad else "passed" if ran else "not run"
                    md.append(f"- correctness, TP=2 ≡ TP=1 (tests/tp_gpt_test.ts, tests/tp_blocks_test.ts) in "
                              f"{n}: {state}")
                md.append("")
            if key == "scaling":
                md.append(next((s["note"] for s in steps if s["name"] == "scaling-adapter"), ""))
                md.append("")
            md.append(r.get("table") or f"failed: {r.get('error')}")
    md += ["", "## Targets (issue #16)", ""]
    t = targets
    md.append(f"- matmul ≥ {t['matmul']['target']}× PyTorch at 4096³: "
              f"{fmt(t['matmul']['ratio'], 2)} (n = {t['matmul']['n']}, {t['matmul']['backend']})")
    for x in t["train"]:
        md.append(f"- {x['what']} ≥ {x['target']}×: {fmt(x['ratio'], 2)}")
    md.append(f"- {t['scaling']['what']} ≥ {t['scaling']['target']}: {fmt(t['scaling']['efficiency'], 2)}")
    if report["errors"]:
        md += ["", "## Errors and skips", ""] + [f"- {k}: {v}" for k, v in report["errors"].items()]
    md.append("")
    with open(os.path.join(out, "gpu_check.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
