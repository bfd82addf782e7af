#!/usr/bin/env python3
"""KV-cache bake-off: quality per bit (and speed) of every cache configuration, driven through the tqkv CLI.

Quality (`tqkv perplexity --json`): for each model one f16-cache run writes the KLD base (exact, whole
vocabulary), then every configuration runs against it. Per row: K+V bits per element (everything the cache
holds, from bytes_resident), PPL, dPPL vs the f16 cache, mean / p99 KLD, top-1 agreement, seconds.
Speed (--speed): decode attention time vs f16 in the same process (`tqkv bench-attn`, the model's head
shape) and end-to-end decode tok/s at ~16k context (`tqkv generate -c ... -f PROMPT --json`), with f16
runs at the start and the end of the same bake-off run as the baseline.
Writes
  bench/results/eval-<model>.json   rows + the exact commands + the commit
  bench/results/eval-<model>.svg    KLD vs bits per element (log scale), Pareto front marked
  docs/results.md                   tables of every eval-*.json present under bench/results/
Progress goes to stderr. Standard library only (no numpy, no plotting library).

  tools/kv_bakeoff.py --model d128                       # quality, all configurations (~35 x 1-2 min)
  tools/kv_bakeoff.py --model d64 --chunks 8 --model stories260K
  tools/kv_bakeoff.py --model d128 --speed-only          # add the speed columns to eval-tqkv-ref-d128.json
  tools/kv_bakeoff.py --configs "pk2/tq2,pk3/tq3 --kv-boundary-layers 1" --chunks 4 --merge   # a few rows
  tools/kv_bakeoff.py --report-only                      # re-draw SVGs and docs/results.md from the JSON
A configuration is "K/V[ extra tqkv flags]"; its label is that string. Add formats to CONFIG_GROUPS.
Times on the shared 2-core box (load 5-10): d128 ctx 1024 x 16 chunks ~1-2 min per configuration; d64
~0.5-1 min at 8 chunks; stories260K ~5 s; the 16k decode run ~1.5-4 min per configuration (the 16k-token
prefill dominates), bench-attn ~20-40 s per K/V pair.
"""
import argparse
import datetime
import glob
import json
import lzma
import math
import os
import shlex
import subprocess
import sys
import tempfile

# Configurations, in groups (the group is a column of the table). A new format is one more string here.
CONFIG_GROUPS = [
    ("formats", [
        "q8_0/q8_0", "q4_0/q4_0", "kivi4/kivi4", "kivi2/kivi2",
        "tq4/tq4", "tq3/tq3", "tq2/tq2",
        "rvq2x2/tq4", "rvq1x3/tq2", "rvq1x2/tq2",
        "pk5/pk5", "pk5/tq4", "pk4/tq4", "pk3.5/tq3", "pk3/tq3", "pk2.5/tq3", "pk2.5/tq2", "pk2/tq2",
    ]),
    ("asymmetric K/V", [
        "pk4/tq3", "pk3/tq4", "pk3/tq2", "pk2/tq3", "tq4/tq2", "tq2/tq4",
        "pk3/f16", "f16/tq3", "pk2/f16", "f16/tq2",
    ]),
    ("boundary layers", [  # first and last layer q8_0 (K and V)
        "pk3/tq3 --kv-boundary-layers 1", "pk2/tq2 --kv-boundary-layers 1",
        "tq3/tq3 --kv-boundary-layers 1", "tq2/tq2 --kv-boundary-layers 1",
    ]),
    ("sinks / window", [  # f16 copies of the first S / the last W tokens
        "pk2/tq2 --kv-sinks 4", "pk2/tq2 --kv-window 64", "pk3/tq3 --kv-window 64",
        "tq2/tq2 --kv-sinks 4", "tq2/tq2 --kv-window 64",
    ]),
    # pk keys in the eigenbasis of the key projection (docs/design.md section 12, "Channel basis").
    ("pk-basis", [
        "pk2/tq2 --pk-basis weights", "pk2.5/tq2 --pk-basis weights", "pk3/tq3 --pk-basis weights",
        "pk4/tq4 --pk-basis weights",
    ]),
    # Trellis-coded values/keys (tt{b}) and the trellis channel code of pk (docs/design.md section 13).
    ("trellis", [
        "tt3/tt3", "tt2/tt2", "f16/tt3", "f16/tt2", "pk2/tt2 --pk-basis weights",
        "pk2.5/tt3 --pk-basis weights", "pk3/tt3 --pk-basis weights",
        "pk2.5/tt3 --pk-basis weights --pk-code trellis", "pk3/tt3 --pk-basis weights --pk-code trellis",
    ]),
    # The peers (docs/format.md "Peers"): llama.cpp's rotated KV cache, QJL, TurboQuant-prod, RaBitQ.
    # A binary without a format skips its rows (one line on stderr).
    ("peers", [
        "rq4_0/rq4_0", "riq4_nl/riq4_nl", "tq1/tq2", "qjl1/tq2", "qjl2/tq2", "qjl3/tq3",
        "tqp2/tq2", "tqp3/tq3", "tqp4/tq4", "rabitq1/tq2", "rq4_0/f16", "f16/rq4_0",
    ]),
    # The TurboQuant paper's outlier split (tqo{h}x{l}, docs/format.md): tqo3x2 = "32 of 128 channels
    # at 3 bits, 96 at 2" (2.5 stored b/elem at d = 128), as keys, as values and both.
    ("outlier split", [
        "tqo3x2/tq2", "tqo3x2/tq3", "tqo4x3/tq3", "tq2/tqo3x2", "tqo3x2/tqo3x2", "tqo3x2/f16",
    ]),
]
DEFAULT_CONFIGS = [c for _, cs in CONFIG_GROUPS for c in cs]
GROUP_OF = {c: g for g, cs in CONFIG_GROUPS for c in cs}

# End-to-end decode at 16k costs a 16k-token prefill per configuration: a subset (f16 is the baseline).
E2E_CONFIGS = ["q8_0/q8_0", "q4_0/q4_0", "tq4/tq4", "tq3/tq3", "tq2/tq2", "rvq1x2/tq2",
               "pk4/tq4", "pk3/tq3", "pk2.5/tq3", "pk2/tq2"]

# Known models: name -> how to get the GGUF and the text, and the bake-off defaults.
# bytes_per_token: of the text's tokenization (measured), to size the 16k prompt.
MODELS = {
    "tqkv-ref-d128": {"alias": "d128", "gguf": "models/tqkv-ref-d128.gguf", "text": "models/eval/heldout.txt",
                      "ctx": 1024, "chunks": 16, "bytes_per_token": 3.196},
    "tqkv-ref-d64": {"alias": "d64", "gguf": "models/tqkv-ref-d64.gguf", "text": "models/eval/heldout.txt",
                     "ctx": 1024, "chunks": 8, "bytes_per_token": 3.196},
    # llama2.c checkpoint from ../shared (read in place), converted to a temporary GGUF.
    "stories260K": {"alias": "stories", "llama2c": ("models/stories260K.bin", "models/tok512.bin"),
                    "text": "corpora/tinystories_sample.txt.xz", "ctx": 512, "chunks": 16, "bytes_per_token": 2.0},
}


def flags_of(config):
    kv, *extra = config.split()
    k, v = kv.split("/")
    return ["-ctk", k, "-ctv", v] + extra


def kv_pair(config):
    return config.split()[0]


def git_commit(repo):
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        # The tool's own outputs (docs/results.md, bench/results/) do not make the source dirty.
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!docs/results.md", ":!bench/results"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_json(cmd, fail_ok=False):
    print("  $ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        if fail_ok:
            return None, p.stderr.strip()
        sys.exit("kv_bakeoff: error: command failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stderr.strip()[-2000:]))
    return (json.loads(p.stdout), p.stderr) if fail_ok else json.loads(p.stdout)


# ---------------------------------------------------------------------------------------------- report


def is_llamacpp(r):
    return r["label"].startswith("llama.cpp")


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


# Label colors: a darker shade of the marker's, so a label reads as its point's family.
DARK = {"#2ca02c": "#1a6b1a", "#1f77b4": "#15507a", "#ff7f0e": "#a65200", "#7f7f7f": "#444", "#9467bd": "#5e3d80"}


def family(r):
    """Plot family: (key, color, legend text)."""
    lab = r["label"]
    if is_llamacpp(r):
        return ("llama.cpp", "#2ca02c", "llama.cpp (its own f16 base)")
    k = lab.split("/")[0]
    if k.startswith("pk"):
        return ("pk", "#1f77b4", "tqkv pre-RoPE keys (pk)")
    if k.startswith(("tq", "rvq")):
        return ("tq", "#ff7f0e", "tqkv rotated (tq / rvq)")
    if k.startswith(("q8_0", "q4_0", "kivi")):
        return ("blocks", "#7f7f7f", "block formats (q8_0 / q4_0 / kivi)")
    return ("other", "#9467bd", "other (f16 K or V, peers)")


def write_svg(path, title, subtitle, rows):
    """KLD (log) vs K+V bits. Pareto front as a red staircase; llama.cpp rows as green triangles; variants
    with boundary layers / sinks / window as hollow markers. Labels are placed greedily without overlap
    (front and llama.cpp rows first); an unlabeled point is still in the table of docs/results.md."""
    pts = [r for r in rows if r.get("kld_mean") and r["kld_mean"] > 0]
    if not pts:
        return
    W, H, L, R, T, B = 1100, 640, 70, 250, 56, 50
    xs = [r["bits"] for r in pts]
    x0, x1 = math.floor(min(xs) * 2) / 2 - 0.25, math.ceil(max(xs) * 2) / 2 + 0.25
    # Piecewise x: the 2-6 bit field where the formats compete gets most of the width; rows above
    # (q8_0, f16 K or V) sit in a compressed strip to the right of a break.
    xb = math.ceil((min(xs) + 4) * 2) / 2 + 0.25
    xb = xb if x1 > xb + 0.75 else x1
    split = 0.80 if xb < x1 else 1.0
    ly = [math.log10(r["kld_mean"]) for r in pts]
    y0, y1 = math.floor(min(ly)), math.ceil(max(ly))
    if y1 == y0:
        y1 += 1
    pw = W - L - R

    def X(b):
        if b <= xb:
            return L + (b - x0) / (xb - x0) * pw * split
        return L + pw * split + (b - xb) / (x1 - xb) * pw * (1 - split)

    Y = lambda k: T + (y1 - math.log10(k)) / (y1 - y0) * (H - T - B)
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>' % (L, esc(title)),
         '<text x="%d" y="38" font-size="11" fill="#444">%s</text>' % (L, esc(subtitle))]
    for e in range(y0, y1 + 1):  # log grid: decades labeled, 2..9 light
        for m in range(1, 10):
            v = m * 10.0 ** e
            if e == y1 and m > 1:
                break
            y = Y(v)
            o.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s"/>' % (L, W - R, y, y, "#aaa" if m == 1 else "#eee"))
            if m == 1:
                o.append('<text x="%d" y="%.1f" text-anchor="end">%g</text>' % (L - 6, y + 4, v))
            elif m in (2, 5):
                o.append('<text x="%d" y="%.1f" text-anchor="end" fill="#999" font-size="9">%g</text>' % (L - 6, y + 3, v))
    ticks = [x0 + 0.25 + 0.5 * i for i in range(int((xb - x0) / 0.5) + 1) if x0 + 0.25 + 0.5 * i <= xb]
    if split < 1:
        tstep = next(t for t in (1, 2, 4, 5, 10, 20) if (x1 - xb) / t <= 4)
        ticks += [float(t) for t in range(int(math.ceil((xb + 0.5) / tstep) * tstep), int(x1) + 1, tstep)]
        xbr = X(xb)
        o.append('<rect x="%.1f" y="%d" width="6" height="%d" fill="white"/>' % (xbr - 3, T, H - T - B))
        o.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#888">//</text>' % (xbr, H - B + 4))
    for b in ticks:
        x = X(b)
        o.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s"/>' % (x, x, T, H - B, "#ccc" if b == int(b) else "#eee"))
        o.append('<text x="%.1f" y="%d" text-anchor="middle">%g</text>' % (x, H - B + 16, b))
    o.append('<text x="%d" y="%d" text-anchor="middle">K+V bits per element (codes, scales, statistics, pages: everything counted)</text>' % ((L + W - R) // 2, H - 12))
    o.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">mean KLD vs f16 cache (log scale; lower is better)</text>' % ((T + H - B) // 2, (T + H - B) // 2))
    # Pareto front (tqkv and llama.cpp together): staircase through the front points.
    front = pareto(pts)
    if front:
        stair = ["%.1f,%.1f" % (X(front[0]["bits"]), Y(front[0]["kld_mean"]))]
        for a, c in zip(front, front[1:]):
            stair.append("%.1f,%.1f" % (X(c["bits"]), Y(a["kld_mean"])))
            stair.append("%.1f,%.1f" % (X(c["bits"]), Y(c["kld_mean"])))
        o.append('<polyline fill="none" stroke="#d62728" stroke-width="2" stroke-opacity="0.7" points="%s"/>' % " ".join(stair))
    fl = {id(r) for r in front}
    boxes = []  # placed label boxes and markers (x0, y0, x1, y1)

    def free(bx):
        return (bx[0] >= L and bx[2] <= W - R + 2 and bx[1] >= T and bx[3] <= H - B and
                not any(bx[0] < c[2] and c[0] < bx[2] and bx[1] < c[3] and c[1] < bx[3] for c in boxes))

    for r in pts:
        x, y = X(r["bits"]), Y(r["kld_mean"])
        boxes.append((x - 5, y - 5, x + 5, y + 5))
    markers, labels = [], []
    # Label priority: front, llama.cpp, the plain "formats" group, then the rest.
    order = sorted(pts, key=lambda r: (not is_llamacpp(r), id(r) not in fl, r.get("group", "formats") != "formats", r["bits"]))
    for r in order:
        x, y = X(r["bits"]), Y(r["kld_mean"])
        fam, color, _ = family(r)
        on = id(r) in fl
        variant = len(r["label"].split()) > 1 and not is_llamacpp(r)
        fill = "white" if variant else color
        if fam == "llama.cpp":
            markers.append('<path d="M%.1f,%.1f l6,10 h-12 z" fill="%s" stroke="%s" stroke-width="%d"/>' %
                           (x, y - 6, color, "#d62728" if on else color, 2 if on else 1))
        else:
            markers.append('<circle cx="%.1f" cy="%.1f" r="%d" fill="%s" stroke="%s" stroke-width="%d"/>' %
                           (x, y, 5 if on else 4, fill, "#d62728" if on else color, 2 if on else 1.5))
        text = (r["label"].replace(" --kv-boundary-layers ", " +bnd").replace(" --kv-window ", " +win")
                .replace(" --kv-sinks ", " +sink").replace(" --pk-basis weights", " +basis"))
        w, h = 6.0 * len(text) + 2, 12
        for dx, dy in ((7, -6), (7, 4), (-7 - w, -6), (-7 - w, 4), (7, -16), (7, 14), (-7 - w, -16), (-7 - w, 14),
                       (7, -26), (7, 24), (-w / 2, -20), (-w / 2, 8), (-7 - w, -26), (-7 - w, 24)):
            bx = (x + dx, y + dy, x + dx + w, y + dy + h)
            if free(bx):
                boxes.append(bx)
                if (dx, dy) not in ((7, -6), (7, 4)):  # leader line: which point a moved label names
                    ax = bx[0] if dx > 0 else (bx[2] if dx < -w / 2 else (bx[0] + bx[2]) / 2)
                    ay = (bx[1] + bx[3]) / 2 if dx > 0 or dx < -w / 2 else (bx[3] if dy < 0 else bx[1])
                    markers.insert(0, '<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999" stroke-width="0.7"/>' % (x, y, ax, ay))
                labels.append('<text x="%.1f" y="%.1f" fill="%s"%s>%s</text>' % (
                    bx[0] + 1, bx[3] - 2, "#000" if on else DARK.get(color, "#333"), ' font-weight="bold"' if on else "", esc(text)))
                break
    o += markers + labels
    # Legend.
    lx, ly0 = W - R + 24, T + 6
    fams = []
    for r in pts:
        f = family(r)
        if f not in fams:
            fams.append(f)
    items = [(f[1], f[2], "tri" if f[0] == "llama.cpp" else "dot") for f in fams]
    items += [("#999", "+ boundary layers / sinks / window / basis", "hollow"), ("#d62728", "Pareto front (bold labels)", "line")]
    for i, (c, t, kind) in enumerate(items):
        yy = ly0 + 18 * i
        if kind == "tri":
            o.append('<path d="M%d,%d l6,10 h-12 z" fill="%s"/>' % (lx, yy - 6, c))
        elif kind == "hollow":
            o.append('<circle cx="%d" cy="%d" r="4" fill="white" stroke="%s" stroke-width="1.5"/>' % (lx, yy, c))
        elif kind == "line":
            o.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"/>' % (lx - 7, lx + 7, yy, yy, c))
        else:
            o.append('<circle cx="%d" cy="%d" r="4" fill="%s"/>' % (lx, yy, c))
        o.append('<text x="%d" y="%d">%s</text>' % (lx + 12, yy + 4, esc(t)))
    note_y = ly0 + 18 * len(items) + 14
    for j, t in enumerate(["Unlabeled points: see the", "table in docs/results.md.", "Labels: K/V formats.",
                           "+bnd1: first/last layer q8_0", "+win64 / +sink4: f16 tokens",
                           "+basis: --pk-basis weights"]):
        o.append('<text x="%d" y="%d" fill="#666" font-size="10">%s</text>' % (lx - 6, note_y + 13 * j, esc(t)))
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def fmt_speed(r, doc):
    s = r.get("speed") or {}
    a = "%.2fx" % s["attn_speedup_vs_f16"] if s.get("attn_speedup_vs_f16") else ""
    e = ""
    if s.get("e2e_tok_per_s"):
        e = "%.1f (%.2fx)" % (s["e2e_tok_per_s"], s["e2e_speedup_vs_f16"])
    return a, e


NOTES_MARKER = "<!-- notes: everything below is hand-written and kept by tools/kv_bakeoff.py -->"


def write_results_md(path, out_dir):
    """Tables of every eval-*.json. Everything below NOTES_MARKER in the existing file (reproduction,
    findings, verdicts) is hand-written and kept at the end."""
    notes = ""
    if os.path.exists(path):
        old = open(path).read()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    evals = sorted(glob.glob(os.path.join(out_dir, "eval-*.json")))
    # The shipped default model first.
    evals.sort(key=lambda e: ("d128" not in e, "d64" not in e, e))
    rel = lambda p: os.path.relpath(p, os.path.dirname(path) or ".")
    lines = ["# KV-cache quality per bit (bake-off)", "",
             "Generated by `tools/kv_bakeoff.py` from " + ", ".join("`%s`" % rel(e) for e in evals) + ".",
             "- KLD: mean KL divergence of the final next-token distribution (exact, whole vocabulary) against the",
             "  same tool's f16 cache, over the scored positions (second half of each chunk, llama-perplexity protocol).",
             "- Bits per element: K+V average of everything the cache holds (codes, scales, per-head statistics, page",
             "  rounding, f16 sink/window rows, boundary layers), from `bytes_resident()` after the last chunk.",
             "- attn vs f16: decode attention time of an f16/f16 cache divided by this K/V pair's, both measured in the",
             "  same `tqkv bench-attn` process with the model's head shape (boundary layers, sinks and window not",
             "  modelled there: those rows repeat their pair's kernel speed).",
             "- 16k decode: end-to-end `tqkv generate` tokens per second after a ~16k-token prompt (beyond the models'",
             "  trained context; speed only), and the ratio to the f16 cache measured in the same bake-off run.",
             "- Pareto: no other row (llama.cpp included) has both fewer or equal bits and lower KLD.",
             "- How to reproduce, run times and what the tables say: the notes at the end.", ""]
    for e in evals:
        d = json.load(open(e))
        base = d["base"]
        lines += ["## %s (ctx %d, %d chunks, %d scored positions)" % (d["model_name"], d["ctx"], d["chunks"], base["tokens"]), ""]
        if d.get("note"):
            lines += [d["note"], ""]
        commits = {}
        for r in d["rows"]:
            if not is_llamacpp(r):
                commits.setdefault(r.get("commit", d["commit"]), []).append(r)
        by = "; ".join("`%s` (%d rows%s)" % (c, len(rs), "" if len(commits) == 1 else ": " + ", ".join(sorted({x.get("group", "") for x in rs})))
                       for c, rs in commits.items())
        lines += ["Quality: commit %s, %s, %s in all. f16-cache PPL %.4f." % (
            by, d["date"], "%.0f min" % (d["quality_seconds"] / 60) if d.get("quality_seconds") else "time not recorded",
            base["ppl"]), ""]
        sp = d.get("speed")
        if sp:
            lines += ["Speed: commit `%s`, %s, %.0f min on %d threads. %s" % (sp["commit"], sp["date"], sp["seconds"] / 60, sp["threads"], sp["summary"]), ""]
        lines += ["![KLD vs bits](%s)" % rel(os.path.splitext(e)[0] + ".svg"), "",
                  "| K / V | group | K+V bits/elem | PPL | dPPL | mean KLD | p99 KLD | top-1 agree | attn vs f16 | 16k decode tok/s (vs f16) | Pareto |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        front = {r["label"] for r in pareto(d["rows"])}
        for r in sorted(d["rows"], key=lambda r: (r["bits"], r["kld_mean"] or 0)):
            a, s = fmt_speed(r, d)
            lines.append("| %s | %s | %.3f | %.4f | %+.2f%% | %.5f | %.4f | %.2f%% | %s | %s | %s |" % (
                r["label"], r.get("group", ""), r["bits"], r["ppl"], 100 * (r["ppl"] / base["ppl"] - 1), r["kld_mean"], r["kld_p99"],
                100 * r["top1_agreement"], a, s, "**yes**" if r["label"] in front else ""))
        if "llamacpp" in d:
            lc = d["llamacpp"]
            lines += ["", "llama.cpp rows: %s, ctx %d, %d chunks, its f16 PPL %.4f. %s." % (lc["tool"], lc["ctx"], lc["chunks"], lc["f16_ppl"], lc["note"])]
        lines += ["", "Commands (BASE: the KLD base file the first command writes):", "```", d["base_command"]]
        lines += [r["command"] for r in d["rows"] if not is_llamacpp(r)]
        lc_cmds = sorted({r["command"] for r in d["rows"] if is_llamacpp(r)})
        lines += lc_cmds
        if sp:
            lines += sp["commands"]
        lines += ["```", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + notes)


def merge_llamacpp(doc, path):
    """Adds the rows of a llamacpp_kld.mjs run (KLD vs llama.cpp's OWN f16 cache; bits from the type sizes)."""
    lj = json.load(open(path))
    doc["rows"] = [r for r in doc["rows"] if not is_llamacpp(r)]
    base_ppl = next(r["ppl"] for r in lj["rows"] if r["label"] == "llama.cpp f16/f16")
    for r in lj["rows"]:
        if r["label"] == "llama.cpp f16/f16":
            continue
        doc["rows"].append({"label": r["label"], "group": "llama.cpp", "bits": r["bits"], "ppl": r["ppl"] * doc["base"]["ppl"] / base_ppl,
                            "ppl_llamacpp": r["ppl"], "dppl_pct": 100 * (r["ppl"] / base_ppl - 1), "kld_mean": r["kld_mean"],
                            "kld_p99": r["kld_p99"], "top1_agreement": r["top1_agreement"], "seconds": None,
                            "cache": r["label"] + " (" + lj["rotation_note"] + ")",
                            "command": "cd bench/llamacpp && node llamacpp_kld.mjs --model ../../%s --text ../../models/eval/heldout.txt --ctx %d --chunks %d --types %s" % (
                                doc["model"], lj["ctx"], lj["chunks"], ",".join(x["label"].split()[1] for x in lj["rows"]))})
    doc["llamacpp"] = {"tool": lj["tool"], "f16_ppl": base_ppl, "chunks": lj["chunks"], "ctx": lj["ctx"],
                       "note": lj["rotation_note"] + "; KLD against llama.cpp's own f16 cache; PPL column scaled to tqkv's f16 PPL by the ratio to llama.cpp's f16 PPL"}


def svg_of(doc, out_json):
    commits = sorted({r.get("commit", doc["commit"])[:10] for r in doc["rows"] if not is_llamacpp(r)})
    sub = "ctx %d, %d chunks; commit %s" % (doc["ctx"], doc["chunks"], " + ".join(commits))
    if "llamacpp" in doc:
        sub += "; llama.cpp %d chunks" % doc["llamacpp"]["chunks"]
    write_svg(os.path.splitext(out_json)[0] + ".svg", "%s: KV-cache KLD vs K+V bits per element" % doc["model_name"], sub, doc["rows"])


# ---------------------------------------------------------------------------------------------- runs


def show(cmd, a, gguf, shown, text, repo):
    """A command as the docs print it: paths relative to the repository, temporary files under /tmp/."""
    cmd = cmd.replace(a.tqkv, "./build/tqkv").replace(gguf, shown).replace(text, os.path.relpath(text, repo))
    return cmd.replace(a.tmp + "/", "/tmp/").replace(repo + "/", "")


def resolve_model(arg, repo, shared, tmp, tqkv):
    """(name, gguf path, text path, defaults) for a known name/alias or a GGUF path; None when absent."""
    for name, m in MODELS.items():
        if arg in (name, m["alias"]):
            if "llama2c" in m:
                ck, tk = (os.path.join(shared, p) for p in m["llama2c"])
                text = os.path.join(shared, m["text"])
                if not all(os.path.exists(p) for p in (ck, tk, text)):
                    print("kv_bakeoff: %s: %s not found: skipped" % (name, ck), file=sys.stderr)
                    return None
                gguf = os.path.join(tmp, name + ".gguf")
                subprocess.run([tqkv, "convert-llama2c", ck, tk, gguf], check=True, stdout=subprocess.DEVNULL)
                m = dict(m, note="stories260K (llama2.c, head_dim 8) converted once per run: `./build/tqkv convert-llama2c %s %s "
                         "/tmp/stories260K.gguf`." % (os.path.relpath(ck, repo), os.path.relpath(tk, repo)))
                return name, gguf, text, m, "/tmp/stories260K.gguf"
            return name, os.path.join(repo, m["gguf"]), os.path.join(repo, m["text"]), m, m["gguf"]
    name = os.path.splitext(os.path.basename(arg))[0]
    return name, arg, os.path.join(repo, "models", "eval", "heldout.txt"), {"ctx": 1024, "chunks": 16, "bytes_per_token": 3.0}, arg


def run_quality(a, name, gguf, text, m, shown, repo, commit, out_json, configs):
    ctx, chunks = a.ctx or m["ctx"], a.chunks or m["chunks"]
    common = [a.tqkv, "perplexity", "-m", gguf, "-c", str(ctx), "--chunks", str(chunks), "-t", str(a.threads), "--json", "-f", text]
    base_file = os.path.join(a.tmp, ".kld-base-%s-c%d-n%d.bin" % (name, ctx, chunks))
    shown_cmd = lambda c: show(" ".join(c).replace(base_file, "BASE"), a, gguf, shown, text, repo)
    t_start = datetime.datetime.now()
    print("[%s] f16 base" % name, file=sys.stderr, flush=True)
    base_cmd = common + ["--kl-divergence-base", base_file]
    base = run_json(base_cmd)
    old = json.load(open(out_json)) if (a.merge and os.path.exists(out_json)) else None
    rows = [r for r in old["rows"] if r["label"] not in configs] if old else []
    for r in rows:  # rows kept from the earlier run keep its commit
        if not is_llamacpp(r):
            r.setdefault("commit", old["commit"])
    if old and (old["ctx"], old["chunks"]) != (ctx, chunks):
        sys.exit("kv_bakeoff: error: --merge into %s made at ctx %d x %d chunks; this run is ctx %d x %d" % (out_json, old["ctx"], old["chunks"], ctx, chunks))
    for i, cfg in enumerate(configs):
        print("[%s] %d/%d %s" % (name, i + 1, len(configs), cfg), file=sys.stderr, flush=True)
        cmd = common + ["--kl-divergence", base_file] + flags_of(cfg) + (a.extra.split() if a.extra else [])
        j, err = run_json(cmd, fail_ok=True)
        if j is None:
            if "--cache-type-" in err:  # a format this binary does not have
                print("    skipped: " + err.splitlines()[-1], file=sys.stderr, flush=True)
                continue
            sys.exit("kv_bakeoff: error: command failed: %s\n%s" % (" ".join(cmd), err[-2000:]))
        label = cfg + (" " + a.extra if a.extra else "")
        rows.append({"label": label, "group": GROUP_OF.get(cfg, "extra"), "commit": commit, "bits": j["kv_bits_per_element"], "ppl": j["ppl"],
                     "dppl_pct": 100 * (j["ppl"] / base["ppl"] - 1), "kld_mean": j["kld_mean"], "kld_p99": j["kld_p99"],
                     "top1_agreement": j["top1_agreement"], "seconds": j["seconds"], "cache": j["cache"],
                     "command": shown_cmd(cmd)})
        r = rows[-1]
        print("    bits %.3f  PPL %.4f (%+.2f%%)  KLD %.5f" % (r["bits"], r["ppl"], r["dppl_pct"], r["kld_mean"]), file=sys.stderr, flush=True)
        if old:  # keep speed results of rows re-run? no: quality changed, speed stays valid for the same flags
            prev = next((x for x in old["rows"] if x["label"] == label), None)
            if prev and prev.get("speed"):
                r["speed"] = prev["speed"]
    os.remove(base_file)
    doc = {"model": shown, "model_name": name, "ctx": ctx, "chunks": chunks, "commit": commit,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "quality_seconds": (datetime.datetime.now() - t_start).total_seconds() + (old.get("quality_seconds", 0) if old else 0),
           "base": base, "base_command": shown_cmd(base_cmd), "rows": rows}
    if a.note or m.get("note"):
        doc["note"] = " ".join(x for x in (m.get("note"), a.note) if x)
    elif old and old.get("note"):
        doc["note"] = old["note"]
    for k in ("llamacpp", "speed"):
        if old and k in old:
            doc[k] = old[k]
    if old and any(is_llamacpp(r) for r in old["rows"]) and not any(is_llamacpp(r) for r in rows):
        rows += [r for r in old["rows"] if is_llamacpp(r)]
    return doc


def prompt_file(text, tokens, bytes_per_token, path):
    """A prefix of `text` (repeated when short) of about `tokens` tokens."""
    raw = lzma.open(text).read() if text.endswith(".xz") else open(text, "rb").read()
    n = int(tokens * bytes_per_token)
    data = (raw * (n // len(raw) + 1))[:n]
    data = data[:data.rfind(b"\n") + 1] or data  # end at a line
    with open(path, "wb") as f:
        f.write(data)


def run_speed(a, name, gguf, text, m, shown, repo, commit, doc):
    """bench-attn for every K/V pair of the rows; generate at ~16k for E2E_CONFIGS and f16 (first and last)."""
    t_start = datetime.datetime.now()
    cmds = []
    shown_cmd = lambda c: show(" ".join(c), a, gguf, shown, text, repo)
    probe, _ = run_json([a.tqkv, "generate", "-m", gguf, "-p", "a", "-n", "0", "--json"], fail_ok=True)
    shape = probe["model_shape"]
    rows = [r for r in doc["rows"] if not is_llamacpp(r)]
    only = set(a.speed_configs.split(",")) if a.speed_configs else None
    attn = {}
    if not a.no_attn:
        pairs = []
        for r in rows:
            p = kv_pair(r["label"])
            if p not in pairs and (only is None or r["label"] in only):
                pairs.append(p)
        # The model's head shape at the e2e context; batch 4 so one f16 layer is >= 4 MB and the cycled
        # layers exceed the CPU caches (bench-attn cycles up to 64 layers toward 1.2 GB).
        for i, p in enumerate(pairs):
            k, v = p.split("/")
            print("[%s] attn %d/%d %s" % (name, i + 1, len(pairs), p), file=sys.stderr, flush=True)
            cmd = [a.tqkv, "bench-attn", "--ctx", str(a.e2e_ctx), "--q-heads", str(shape["n_heads"]), "--kv-heads", str(shape["n_kv_heads"]),
                   "--head-dim", str(shape["head_dim"]), "--batch", "4", "--threads", str(a.threads), "--min-time", "1",
                   "--dram-mb", "256", "--interleave", "--cache-type-k", k, "--cache-type-v", v, "--json"]
            j, err = run_json(cmd, fail_ok=True)
            if j is None:
                print("    skipped: " + err.splitlines()[-1] if err else "failed", file=sys.stderr)
                attn[p] = {"error": err.splitlines()[-1] if err else "failed"}
                continue
            j["loadavg_1min"] = os.getloadavg()[0]
            attn[p] = j
            print("    %.3f ms vs f16 %.3f ms: %.2fx" % (j["ms_per_step"], j["f16_ms_per_step"], j["speedup_vs_f16"]), file=sys.stderr, flush=True)
        if pairs:
            cmds.append(shown_cmd(cmd).replace("--cache-type-k %s --cache-type-v %s" % (k, v), "--cache-type-k K --cache-type-v V") + "   # per K/V pair")
    e2e = {}
    if not a.no_e2e:
        ngen = a.e2e_gen
        pf = os.path.join(a.tmp, "prompt16k-%s.txt" % name)
        want = a.e2e_ctx - ngen - 64
        prompt_file(text, want, m.get("bytes_per_token", 3.0), pf)
        e2e_list = [c for c in (a.speed_configs.split(",") if a.speed_configs else E2E_CONFIGS) if any(r["label"] == c for r in rows)]
        runs = ["f16/f16"] + e2e_list + ["f16/f16"]
        for i, cfg in enumerate(runs):
            print("[%s] 16k decode %d/%d %s" % (name, i + 1, len(runs), cfg), file=sys.stderr, flush=True)
            cmd = [a.tqkv, "generate", "-m", gguf, "-f", pf, "-c", str(a.e2e_ctx), "-n", str(ngen), "--temp", "0",
                   "-t", str(a.threads), "--json"] + flags_of(cfg)
            j, err = run_json(cmd, fail_ok=True)
            if j is None:
                sys.exit("kv_bakeoff: error: %s failed: %s" % (" ".join(cmd), err[-500:]))
            res = {"tok_per_s": j["gen_tok_per_s"], "prompt_tokens": j["prompt_tokens"], "generated": j["generated_tokens"],
                   "prefill_seconds": j["prefill_seconds"], "kv_bits": j["kv_bits_per_element"], "loadavg_1min": os.getloadavg()[0]}
            e2e.setdefault(cfg, []).append(res)
            print("    prompt %d tokens (%.0f s), decode %.2f tok/s" % (j["prompt_tokens"], j["prefill_seconds"], j["gen_tok_per_s"]), file=sys.stderr, flush=True)
        cmds.append(shown_cmd(cmd).replace(" ".join(flags_of(cfg)), "-ctk K -ctv V") + "   # per configuration; f16 first and last")
    # A part skipped in this run (--no-attn / --no-e2e) keeps what an earlier run measured.
    prev = doc.get("speed") or {}
    if a.no_attn:
        attn = prev.get("attn_raw", {})
    else:
        attn = dict(prev.get("attn_raw", {}), **attn) if only is not None else attn
    if a.no_e2e:
        e2e = prev.get("e2e_raw", {})
    elif only is not None and prev.get("e2e_raw"):
        # Re-run rows are compared with this run's f16; the earlier run's f16 stays under its own key.
        prev_raw = dict(prev["e2e_raw"])
        if "f16/f16" in prev_raw:
            prev_raw["f16/f16 (earlier run)"] = prev_raw.pop("f16/f16")
        e2e = dict(prev_raw, **e2e)
    f16 = [x["tok_per_s"] for x in e2e.get("f16/f16", [])]
    f16_mean = sum(f16) / len(f16) if f16 else None
    for r in rows:
        s = {}
        at = attn.get(kv_pair(r["label"]))
        if at and "speedup_vs_f16" in at:
            s.update({"attn_speedup_vs_f16": at["speedup_vs_f16"], "attn_ms": at["ms_per_step"], "attn_f16_ms": at["f16_ms_per_step"]})
        if r["label"] in e2e and (only is None or r["label"] in only or a.no_e2e):
            x = e2e[r["label"]][0]
            s.update({"e2e_tok_per_s": x["tok_per_s"], "e2e_speedup_vs_f16": x["tok_per_s"] / f16_mean, "e2e_prompt_tokens": x["prompt_tokens"],
                      "e2e_prefill_seconds": x["prefill_seconds"], "e2e_f16_tok_per_s": f16})
        elif only is not None and not a.no_e2e:  # not re-run: keep its earlier e2e numbers (and their f16)
            s.update({k: v for k, v in (r.get("speed") or {}).items() if k.startswith("e2e_")})
        if s:
            r["speed"] = s
        else:
            r.pop("speed", None)
    loads = [x["loadavg_1min"] for x in attn.values() if "loadavg_1min" in x] + [x["loadavg_1min"] for v in e2e.values() for x in v]
    summary = ("Load average (1 min) of the shared 2-core box during the runs: %.1f-%.1f, so the speeds are noisy. " % (min(loads), max(loads))) if loads else ""
    summary += "bench-attn: %d q / %d kv heads, head_dim %d, batch 4, ctx %d." % (shape["n_heads"], shape["n_kv_heads"], shape["head_dim"], a.e2e_ctx)
    if f16:
        p = e2e["f16/f16"][0]["prompt_tokens"]
        summary += " 16k decode: %d-token prompt, %d generated tokens (greedy); f16 %s tok/s (first and last run of the bake-off)." % (
            p, a.e2e_gen, " / ".join("%.2f" % x for x in f16))
        if "f16/f16 (earlier run)" in e2e:
            summary += (" Rows re-run later (%s) are compared with that run's f16; the others with f16 %s tok/s of the earlier run." %
                        (", ".join(sorted(c for c in e2e if c in (only or ()))), " / ".join("%.2f" % x["tok_per_s"] for x in e2e["f16/f16 (earlier run)"])))
    if a.no_attn or a.no_e2e:  # the commands of the part kept
        cmds = [c for c in prev.get("commands", []) if ("bench-attn" in c) == a.no_attn] + cmds
    secs = (datetime.datetime.now() - t_start).total_seconds()
    doc["speed"] = {"commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    "seconds": secs + (prev.get("seconds", 0) if (a.no_attn or a.no_e2e) else 0),
                    "threads": a.threads, "e2e_ctx": a.e2e_ctx,
                    "e2e_f16_tok_per_s": f16, "attn_raw": attn, "e2e_raw": e2e, "summary": summary, "commands": cmds}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tqkv", default="./build/tqkv")
    ap.add_argument("--model", action="append", help="d128, d64, stories260K (from --shared) or a GGUF path; repeatable (default d128)")
    ap.add_argument("--shared", help="the shared data dir with models/stories260K.bin (default: ../shared of the repo)")
    ap.add_argument("--ctx", type=int, help="tokens per chunk (default: per model)")
    ap.add_argument("--chunks", type=int, help="chunks (default: per model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", help="comma-separated configurations 'K/V[ flags]' (default: CONFIG_GROUPS)")
    ap.add_argument("--extra", default="", help="extra tqkv flags appended to every configuration run")
    ap.add_argument("--note", help="a sentence for docs/results.md under the model's heading")
    ap.add_argument("--out-dir", default="bench/results")
    ap.add_argument("--md", default="docs/results.md")
    ap.add_argument("--merge", action="store_true", help="keep rows of an existing eval-<model>.json not re-run")
    ap.add_argument("--llamacpp", help="JSON of bench/llamacpp/llamacpp_kld.mjs for the (single) model: its rows join the table/plot")
    ap.add_argument("--report-only", action="store_true", help="run nothing: merge --llamacpp and rewrite the SVGs and docs/results.md")
    ap.add_argument("--speed", action="store_true", help="also measure the speed columns after the quality runs")
    ap.add_argument("--speed-only", action="store_true", help="only the speed columns, into the existing eval-<model>.json")
    ap.add_argument("--speed-configs", help="comma-separated row labels for the speed runs (default: E2E_CONFIGS for 16k "
                    "decode, every K/V pair for bench-attn)")
    ap.add_argument("--no-attn", action="store_true", help="skip bench-attn")
    ap.add_argument("--no-e2e", action="store_true", help="skip the 16k decode runs")
    ap.add_argument("--e2e-ctx", type=int, default=16384)
    ap.add_argument("--e2e-gen", type=int, default=48)
    a = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shared = a.shared or os.environ.get("TQKV_SHARED_DIR") or os.path.join(os.path.dirname(repo), "shared")
    configs = a.configs.split(",") if a.configs else DEFAULT_CONFIGS
    a.tqkv = os.path.abspath(a.tqkv)
    commit = git_commit(repo)
    os.makedirs(a.out_dir, exist_ok=True)
    if a.report_only:
        for out_json in sorted(glob.glob(os.path.join(a.out_dir, "eval-*.json"))):
            doc = json.load(open(out_json))
            if a.llamacpp and a.model and doc["model_name"] in [resolve_name(m) for m in a.model]:
                merge_llamacpp(doc, a.llamacpp)
                with open(out_json, "w") as f:
                    json.dump(doc, f, indent=1)
            svg_of(doc, out_json)
        write_results_md(a.md, a.out_dir)
        print("wrote %s and the SVGs" % a.md, file=sys.stderr)
        return
    with tempfile.TemporaryDirectory(prefix="kv_bakeoff-") as tmp:
        a.tmp = tmp
        for marg in a.model or ["d128"]:
            got = resolve_model(marg, repo, shared, tmp, a.tqkv)
            if got is None:
                continue
            name, gguf, text, m, shown = got
            out_json = os.path.join(a.out_dir, "eval-%s.json" % name)
            if a.speed_only:
                doc = json.load(open(out_json))
            else:
                doc = run_quality(a, name, gguf, text, m, shown, repo, commit, out_json, configs)
                if a.llamacpp:
                    merge_llamacpp(doc, a.llamacpp)
                with open(out_json, "w") as f:
                    json.dump(doc, f, indent=1)
            if a.speed or a.speed_only:
                run_speed(a, name, gguf, text, m, shown, repo, commit, doc)
                with open(out_json, "w") as f:
                    json.dump(doc, f, indent=1)
            svg_of(doc, out_json)
    write_results_md(a.md, a.out_dir)
    print("wrote %s and %s/eval-*.json/svg" % (a.md, a.out_dir), file=sys.stderr)


def resolve_name(arg):
    for name, m in MODELS.items():
        if arg in (name, m["alias"]):
            return name
    return os.path.splitext(os.path.basename(arg))[0]


if __name__ == "__main__":
    main()
