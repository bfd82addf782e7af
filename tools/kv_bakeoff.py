#!/usr/bin/env python3
"""KV-cache bake-off: quality per bit of every cache configuration, driven through `tqkv perplexity --json`.

For each model: one f16-cache run writes the KLD base (exact, whole vocabulary), then every configuration
runs against it. Per row: K+V bits per element (everything the cache holds, from bytes_resident), PPL,
dPPL vs the f16 cache, mean / p99 KLD, top-1 agreement, seconds. Writes
  bench/results/eval-<model>.json   rows + the exact commands + the commit
  bench/results/eval-<model>.svg    KLD vs bits per element (log scale), Pareto front marked
  docs/results.md                   tables of every eval-*.json present under bench/results/
Progress goes to stderr. Standard library only (no numpy, no plotting library).

  tools/kv_bakeoff.py --model models/tqkv-ref-d128.gguf --ctx 1024 --chunks 16
  tools/kv_bakeoff.py --configs "pk2/tq2,pk3/tq3" --chunks 4      # a quick subset
Time: one configuration of the shipped d128 model at ctx 1024 x 16 chunks takes ~20 s of CPU
(~1-2 min wall on a loaded 2-core box); the default set is ~16 configurations per model.
"""
import argparse
import datetime
import glob
import json
import math
import os
import subprocess
import sys

# label -> tqkv flags. K / V formats; bits are K+V averages as measured by the cache.
DEFAULT_CONFIGS = [
    "q8_0/q8_0", "q4_0/q4_0",
    "tq4/tq4", "tq3/tq3", "tq2/tq2", "rvq2x2/tq4", "rvq2x2/tq2", "rvq1x2/tq2",
    "pk4/tq4", "pk3.5/tq3", "pk3/tq3", "pk3/tq2", "pk2.5/tq2", "pk2/tq2",
    # the peers (docs/format.md "Peers"): llama.cpp's rotated KV cache, QJL, TurboQuant-prod
    "rq4_0/rq4_0", "riq4_nl/riq4_nl", "tq1/tq2", "qjl1/tq2", "qjl2/tq2", "qjl3/tq3",
    "tqp2/tq2", "tqp3/tq3", "tqp4/tq4", "rabitq1/tq2", "rq4_0/f16", "f16/rq4_0",
]


def flags_of(config):
    k, v = config.split("/")
    return ["-ctk", k, "-ctv", v]


def git_commit(repo):
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_json(cmd):
    print("  $ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit("kv_bakeoff: error: command failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stderr.strip()[-2000:]))
    return json.loads(p.stdout)


def pareto(rows):
    """Rows not dominated (another row with <= bits and < KLD, or < bits and <= KLD)."""
    pts = [r for r in rows if r.get("kld_mean") is not None]
    front = []
    for r in pts:
        dom = any((o["bits"] <= r["bits"] and o["kld_mean"] < r["kld_mean"]) or
                  (o["bits"] < r["bits"] and o["kld_mean"] <= r["kld_mean"]) for o in pts if o is not r)
        if not dom:
            front.append(r)
    return sorted(front, key=lambda r: r["bits"])


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_svg(path, title, rows):
    pts = [r for r in rows if r.get("kld_mean") and r["kld_mean"] > 0]
    if not pts:
        return
    W, H, L, R, T, B = 760, 480, 70, 190, 40, 50
    xs = [r["bits"] for r in pts]
    x0, x1 = math.floor(min(xs)) - 0.25, math.ceil(max(xs)) + 0.25
    ly = [math.log10(r["kld_mean"]) for r in pts]
    y0, y1 = math.floor(min(ly)), math.ceil(max(ly))
    if y1 == y0:
        y1 += 1
    X = lambda b: L + (b - x0) / (x1 - x0) * (W - L - R)
    Y = lambda k: T + (y1 - math.log10(k)) / (y1 - y0) * (H - T - B)
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="22" font-size="14">%s</text>' % (L, esc(title))]
    for e in range(y0, y1 + 1):  # log grid: decades labeled, 2..9 light
        for m in range(1, 10):
            v = m * 10.0 ** e
            if e == y1 and m > 1:
                break
            y = Y(v)
            o.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s"/>' % (L, W - R, y, y, "#bbb" if m == 1 else "#eee"))
            if m == 1:
                o.append('<text x="%d" y="%.1f" text-anchor="end">1e%d</text>' % (L - 6, y + 4, e))
    b = math.ceil(x0)
    while b <= x1:
        x = X(b)
        o.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#ddd"/>' % (x, x, T, H - B))
        o.append('<text x="%.1f" y="%d" text-anchor="middle">%g</text>' % (x, H - B + 16, b))
        b += 1
    o.append('<text x="%d" y="%d" text-anchor="middle">K+V bits per element (everything counted)</text>' % ((L + W - R) // 2, H - 12))
    o.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">mean KLD vs f16 cache (log)</text>' % ((T + H - B) // 2, (T + H - B) // 2))
    front = pareto(pts)
    o.append('<polyline fill="none" stroke="#d62728" stroke-width="2" points="%s"/>' %
             " ".join("%.1f,%.1f" % (X(r["bits"]), Y(r["kld_mean"])) for r in front))
    fl = {id(r) for r in front}
    for r in pts:
        on = id(r) in fl
        color = "#1f77b4" if r["label"].startswith("pk") else ("#2ca02c" if "llama.cpp" in r["label"] else "#555")
        o.append('<circle cx="%.1f" cy="%.1f" r="%d" fill="%s" stroke="%s" stroke-width="2"/>' %
                 (X(r["bits"]), Y(r["kld_mean"]), 5 if on else 4, color, "#d62728" if on else color))
        o.append('<text x="%.1f" y="%.1f">%s</text>' % (X(r["bits"]) + 7, Y(r["kld_mean"]) + 4, esc(r["label"])))
    ly0 = T + 10
    for i, (c, t) in enumerate([("#1f77b4", "pre-RoPE keys (pk)"), ("#555", "other tqkv formats"),
                                ("#2ca02c", "llama.cpp (if measured)"), ("#d62728", "Pareto front")]):
        o.append('<circle cx="%d" cy="%d" r="4" fill="%s"/><text x="%d" y="%d">%s</text>' % (W - R + 20, ly0 + 16 * i, c, W - R + 30, ly0 + 16 * i + 4, t))
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def write_results_md(path, out_dir):
    evals = sorted(glob.glob(os.path.join(out_dir, "eval-*.json")))
    lines = ["# KV-cache quality per bit (bake-off)", "",
             "Generated by `tools/kv_bakeoff.py` from " + ", ".join("`%s`" % os.path.relpath(e, os.path.dirname(path) or ".") for e in evals) + ".",
             "KLD: mean KL divergence of the final next-token distribution (exact, whole vocabulary) against the",
             "same tool's f16 cache, over the scored positions (second half of each chunk, llama-perplexity protocol).",
             "Bits per element: K+V average of everything the cache holds (codes, scales, per-head statistics, page",
             "rounding), from `bytes_resident()` after the last chunk.", ""]
    for e in evals:
        d = json.load(open(e))
        base = d["base"]
        lines += ["## %s (ctx %d, %d chunks, %d scored positions)" % (d["model_name"], d["ctx"], d["chunks"], base["tokens"]), "",
                  "Commit `%s`, %s. f16-cache PPL %.4f." % (d["commit"], d["date"], base["ppl"]), "",
                  "![KLD vs bits](%s)" % os.path.relpath(os.path.splitext(e)[0] + ".svg", os.path.dirname(path) or "."), "",
                  "| K / V | K+V bits/elem | PPL | dPPL | mean KLD | p99 KLD | top-1 agree | Pareto |",
                  "|---|---|---|---|---|---|---|---|"]
        front = {r["label"] for r in pareto(d["rows"])}
        for r in sorted(d["rows"], key=lambda r: r["bits"]):
            lines.append("| %s | %.3f | %.4f | %+.2f%% | %.5f | %.4f | %.2f%% | %s |" % (
                r["label"], r["bits"], r["ppl"], 100 * (r["ppl"] / base["ppl"] - 1), r["kld_mean"], r["kld_p99"],
                100 * r["top1_agreement"], "yes" if r["label"] in front else ""))
        if "llamacpp" in d:
            lc = d["llamacpp"]
            lines += ["", "llama.cpp rows: %s, ctx %d, %d chunks, its f16 PPL %.4f. %s." % (lc["tool"], lc["ctx"], lc["chunks"], lc["f16_ppl"], lc["note"])]
        lines += ["", "Commands:", "```", d["base_command"]] + [r["command"] for r in d["rows"]] + ["```", ""]
    notes = ""  # hand-written verdicts below NOTES_MARKER survive regeneration
    if os.path.exists(path):
        old = open(path).read()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + notes)


NOTES_MARKER = "<!-- notes: everything below is hand-written and kept by tools/kv_bakeoff.py -->"


def merge_llamacpp(doc, path):
    """Adds the rows of a llamacpp_kld.mjs run (KLD vs llama.cpp's OWN f16 cache; bits from the type sizes)."""
    lj = json.load(open(path))
    doc["rows"] = [r for r in doc["rows"] if not r["label"].startswith("llama.cpp")]
    base_ppl = next(r["ppl"] for r in lj["rows"] if r["label"] == "llama.cpp f16/f16")
    for r in lj["rows"]:
        if r["label"] == "llama.cpp f16/f16":
            continue
        doc["rows"].append({"label": r["label"], "bits": r["bits"], "ppl": r["ppl"] * doc["base"]["ppl"] / base_ppl,
                            "ppl_llamacpp": r["ppl"], "dppl_pct": 100 * (r["ppl"] / base_ppl - 1), "kld_mean": r["kld_mean"],
                            "kld_p99": r["kld_p99"], "top1_agreement": r["top1_agreement"], "seconds": None,
                            "cache": r["label"] + " (" + lj["rotation_note"] + ")",
                            "command": "cd bench/llamacpp && node llamacpp_kld.mjs --model ../../%s --text ../../models/eval/heldout.txt --ctx %d --chunks %d --types ..." % (doc["model"], lj["ctx"], lj["chunks"])})
    doc["llamacpp"] = {"tool": lj["tool"], "f16_ppl": base_ppl, "chunks": lj["chunks"], "ctx": lj["ctx"],
                       "note": lj["rotation_note"] + "; KLD against llama.cpp's own f16 cache; PPL column scaled to tqkv's f16 PPL by the ratio to llama.cpp's f16 PPL"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tqkv", default="./build/tqkv")
    ap.add_argument("--model", action="append", help="GGUF model(s) (default: the shipped d128 model)")
    ap.add_argument("--text", help="evaluation text (default: models/eval/heldout.txt)")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", help="comma-separated K/V pairs, e.g. 'pk2/tq2,tq3/tq3' (default: the built-in set)")
    ap.add_argument("--extra", default="", help="extra tqkv flags appended to every configuration run")
    ap.add_argument("--out-dir", default="bench/results")
    ap.add_argument("--md", default="docs/results.md")
    ap.add_argument("--merge", action="store_true", help="keep rows of an existing eval-<model>.json not re-run")
    ap.add_argument("--llamacpp", help="JSON of bench/llamacpp/llamacpp_kld.mjs for the (single) model: its rows join the table/plot")
    ap.add_argument("--report-only", action="store_true", help="run nothing: merge --llamacpp and rewrite the SVG and docs/results.md")
    a = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    models = a.model or [os.path.join(repo, "models", "tqkv-ref-d128.gguf")]
    configs = a.configs.split(",") if a.configs else DEFAULT_CONFIGS
    commit = git_commit(repo)
    os.makedirs(a.out_dir, exist_ok=True)
    for model in models:
        name = os.path.splitext(os.path.basename(model))[0]
        out_json = os.path.join(a.out_dir, "eval-%s.json" % name)
        if a.report_only:
            doc = json.load(open(out_json))
            if a.llamacpp:
                merge_llamacpp(doc, a.llamacpp)
                with open(out_json, "w") as f:
                    json.dump(doc, f, indent=1)
            write_svg(os.path.splitext(out_json)[0] + ".svg", "%s: KLD vs K+V bits/elem (ctx %d, %d chunks)" % (name, doc["ctx"], doc["chunks"]), doc["rows"])
            continue
        common = [a.tqkv, "perplexity", "-m", model, "-c", str(a.ctx), "--chunks", str(a.chunks), "-t", str(a.threads), "--json"]
        common += ["-f", a.text or os.path.join(repo, "models", "eval", "heldout.txt")]
        base_file = os.path.join(a.out_dir, ".kld-base-%s-c%d-n%d.bin" % (name, a.ctx, a.chunks))
        print("[%s] f16 base" % name, file=sys.stderr, flush=True)
        base_cmd = common + ["--kl-divergence-base", base_file]
        base = run_json(base_cmd)
        rows = []
        if a.merge and os.path.exists(out_json):
            old = json.load(open(out_json))
            rows = [r for r in old["rows"] if r["label"] not in configs]
        for i, cfg in enumerate(configs):
            print("[%s] %d/%d %s" % (name, i + 1, len(configs), cfg), file=sys.stderr, flush=True)
            cmd = common + ["--kl-divergence", base_file] + flags_of(cfg) + (a.extra.split() if a.extra else [])
            j = run_json(cmd)
            rows.append({"label": cfg + (" " + a.extra if a.extra else ""), "bits": j["kv_bits_per_element"], "ppl": j["ppl"],
                         "dppl_pct": 100 * (j["ppl"] / base["ppl"] - 1), "kld_mean": j["kld_mean"], "kld_p99": j["kld_p99"],
                         "top1_agreement": j["top1_agreement"], "seconds": j["seconds"], "cache": j["cache"],
                         "command": " ".join(cmd).replace(base_file, "BASE").replace(repo + "/", "")})
            r = rows[-1]
            print("    bits %.3f  PPL %.4f (%+.2f%%)  KLD %.5f" % (r["bits"], r["ppl"], r["dppl_pct"], r["kld_mean"]), file=sys.stderr, flush=True)
        os.remove(base_file)
        doc = {"model": os.path.relpath(model, repo) if model.startswith(repo) else model, "model_name": name,
               "ctx": a.ctx, "chunks": a.chunks, "commit": commit,
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "base": base, "base_command": " ".join(base_cmd).replace(base_file, "BASE").replace(repo + "/", ""), "rows": rows}
        if a.llamacpp:
            merge_llamacpp(doc, a.llamacpp)
        with open(out_json, "w") as f:
            json.dump(doc, f, indent=1)
        write_svg(os.path.splitext(out_json)[0] + ".svg", "%s: KLD vs K+V bits/elem (ctx %d, %d chunks)" % (name, a.ctx, a.chunks), rows)
    write_results_md(a.md, a.out_dir)
    print("wrote %s and %s/eval-*.json/svg" % (a.md, a.out_dir), file=sys.stderr)


if __name__ == "__main__":
    main()
