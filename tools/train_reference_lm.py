#!/usr/bin/env python3
"""Train small Llama-style reference LMs on public-domain English text and export them to GGUF.

Runs on a CUDA machine (PyTorch >= 2.0, sentencepiece, numpy); --smoke runs a tiny configuration
that also works on a CPU.  One full run (tokenizer, two models, evaluation, export, self-check)
takes about 5 minutes on one H200.

Pipeline (everything in one process, all outputs under --out):
  1. Data: the corpora <data-dir>/{austen,brown,kjv,web_bible,fortunes,jargon}.txt.xz, read as
     UTF-8 with no newline translation.  Each text is split at the first '\\n' at or after 95% of
     its characters: the first part is training data, the last ~5% is held out and never trained on.
     The evaluation text heldout.txt is, in the order above, a prefix of each held-out part (cut at
     a line end, at most --heldout-part-bytes UTF-8 bytes) joined by a single '\\n'
     (one blank line between parts).  The rest of each held-out part (after that prefix) is the
     validation text used to pick the best checkpoint, so the reported perplexity text plays no
     part in training or model selection.
  2. Tokenizer: SentencePiece BPE trained on the training lines only, byte fallback, identity
     normalization, dummy prefix, whitespace kept as is (settings that an llama.cpp-style SPM
     tokenizer reproduces exactly).  ids: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>.
  3. Models: Llama (RMSNorm eps 1e-5, RoPE theta 10000 rotating ADJACENT pairs (x[2i], x[2i+1]),
     i.e. ggml/llama.cpp rope mode 0 on GGUF weights, so Q/K need no permutation at export),
     SwiGLU, grouped-query attention (query head h uses kv head h // (n_head / n_head_kv)), no
     biases, tied input/output embeddings.  bf16 autocast, AdamW, linear warmup + cosine decay,
     dropout, ctx 1024; the first token of every training window is replaced by BOS (as in the
     perplexity evaluation).  The checkpoint with the lowest validation loss is kept.
  4. Evaluation (fp32, full-precision attention, weights rounded to f16 exactly as exported):
     llama.cpp-style perplexity on heldout.txt: tokenize the whole file (no BOS), split into
     floor(n/1024) chunks of 1024 tokens, set each chunk's first token to BOS, score positions
     j in [512, 1023): -log p(token[j+1] | logits at j); ppl = exp(mean).
     Key statistics per layer (post-RoPE keys): per-channel RMS max/median ratio and excess
     kurtosis before and after a randomized Hadamard rotation.
  5. GGUF v3 export (F16 matrices, F32 norms), re-read with an independent minimal reader, numpy
     fp32 forward over 64 held-out tokens compared with the PyTorch model: top-1 must agree at all
     64 positions.

Usage (the command that produced models/): see models/README.md.
"""
import argparse
import hashlib
import io
import json
import lzma
import math
import os
import struct
import sys
import time

import numpy as np

CORPORA = ["austen", "brown", "kjv", "web_bible", "fortunes", "jargon"]
HOLDOUT_FRACTION = 0.05
CTX = 1024
BOS, EOS, UNK = 1, 2, 0

# Model shapes.  Parameter counts are with tied embeddings and vocab 4096.
CONFIGS = {
    # head_dim 128, GQA 4 (4 query heads share 1 kv head): the embedded default.
    "d128": dict(name="tqkv-ref-d128", dim=512, n_layers=5, n_heads=4, n_kv_heads=1, ffn=768,
                 epochs=12, lr=1.5e-3, dropout=0.1, batch=32, train_seconds=200),
    # head_dim 64, GQA 2 (4 query heads, 2 kv heads): exercises several kv heads per layer.
    "d64": dict(name="tqkv-ref-d64", dim=256, n_layers=4, n_heads=4, n_kv_heads=2, ffn=640,
                epochs=16, lr=2e-3, dropout=0.1, batch=32, train_seconds=130),
}
SMOKE_CONFIGS = {
    "d128": dict(name="smoke-d128", dim=256, n_layers=2, n_heads=2, n_kv_heads=1, ffn=256,
                 epochs=2, lr=2e-3, dropout=0.1, batch=4, train_seconds=60),
    "d64": dict(name="smoke-d64", dim=256, n_layers=2, n_heads=4, n_kv_heads=2, ffn=256,
                epochs=2, lr=2e-3, dropout=0.1, batch=4, train_seconds=60),
}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

def read_xz_text(path):
    with lzma.open(path, "rt", encoding="utf-8", newline="") as f:
        return f.read()


def split_text(text):
    """Training part and held-out part; the held-out part starts at a line start."""
    cut = int(len(text) * (1.0 - HOLDOUT_FRACTION))
    nl = text.find("\n", cut)
    cut = len(text) if nl < 0 else nl + 1
    return text[:cut], text[cut:]


def prefix_at_line_end(text, max_bytes):
    """Longest prefix of text that ends with '\\n' (or is the whole text) within max_bytes UTF-8."""
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    b = text.encode("utf-8")[:max_bytes]
    s = b.decode("utf-8", errors="ignore")
    nl = s.rfind("\n")
    return s[: nl + 1] if nl >= 0 else s


def load_data(data_dir, part_bytes, smoke):
    parts = []
    for name in CORPORA:
        path = os.path.join(data_dir, name + ".txt.xz")
        text = read_xz_text(path)
        if smoke:
            text = text[: 200_000]
        train, held = split_text(text)
        eval_part = prefix_at_line_end(held, part_bytes)
        val_part = held[len(eval_part):]
        parts.append(dict(name=name, n_chars=len(text), train=train, held=held,
                          eval=eval_part, val=val_part,
                          sha256=hashlib.sha256(text.encode("utf-8")).hexdigest()))
        log(f"data {name}: {len(text)} chars, train {len(train)}, held-out {len(held)} "
            f"(eval prefix {len(eval_part)} chars, validation {len(val_part)} chars)")
    heldout_text = "\n".join(p["eval"] for p in parts)
    return parts, heldout_text


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

def train_tokenizer(parts, vocab_size, out_dir, smoke):
    import sentencepiece as spm
    lines = []
    for p in parts:
        lines.extend(l for l in p["train"].split("\n") if l.strip())
    log(f"tokenizer: training BPE vocab {vocab_size} on {len(lines)} training lines")
    t0 = time.time()
    prefix = os.path.join(out_dir, "tokenizer")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=prefix, model_type="bpe",
        vocab_size=vocab_size, byte_fallback=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, split_digits=False, allow_whitespace_only_pieces=True,
        max_sentence_length=1 << 16, input_sentence_size=0, shuffle_input_sentence=False,
        num_threads=max(1, os.cpu_count() or 1), minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    log(f"tokenizer: done in {time.time() - t0:.1f}s, vocab {sp.get_piece_size()}")
    assert sp.get_piece_size() == vocab_size
    assert sp.id_to_piece(0) == "<unk>" and sp.id_to_piece(1) == "<s>" and sp.id_to_piece(2) == "</s>"
    for b in range(256):
        assert sp.id_to_piece(3 + b) == "<0x%02X>" % b, sp.id_to_piece(3 + b)
    return sp


def encode_big(sp, text, chunk_chars=1 << 18):
    """Encode a long text in line-aligned chunks (each chunk gets the dummy prefix)."""
    chunks, i = [], 0
    while i < len(text):
        j = min(len(text), i + chunk_chars)
        if j < len(text):
            nl = text.find("\n", j)
            j = len(text) if nl < 0 else nl + 1
        chunks.append(text[i:j])
        i = j
    try:
        ids = sp.encode(chunks, num_threads=max(1, os.cpu_count() or 1))
    except TypeError:
        ids = sp.encode(chunks)
    return np.concatenate([np.asarray(x, dtype=np.int32) for x in ids]) if ids else np.zeros(0, np.int32)


def tokenizer_gguf_fields(sp):
    n = sp.get_piece_size()
    tokens, scores, types = [], [], []
    for i in range(n):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            t = 2
        elif sp.is_control(i):
            t = 3
        elif sp.is_byte(i):
            t = 6
        elif sp.is_unused(i):
            t = 5
        else:
            t = 1
        types.append(t)
    return tokens, np.asarray(scores, np.float32), np.asarray(types, np.int32)


# ----------------------------------------------------------------------------------------------
# Model (PyTorch)
# ----------------------------------------------------------------------------------------------

def build_model_classes():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    has_sdpa = hasattr(F, "scaled_dot_product_attention")

    class RMSNorm(nn.Module):
        def __init__(self, dim, eps=1e-5):
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x):
            xf = x.float()
            y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
            return (y * self.weight.float()).type_as(x)

    def rope_tables(T, hd, theta, device):
        inv = 1.0 / (theta ** (torch.arange(0, hd, 2, device=device, dtype=torch.float64) / hd))
        ang = torch.arange(T, device=device, dtype=torch.float64)[:, None] * inv[None, :]
        return torch.cos(ang).float(), torch.sin(ang).float()

    def apply_rope(x, cos, sin):
        # x: B, T, H, hd; rotate adjacent pairs (x[2i], x[2i+1]) by angle pos * theta^(-2i/hd)
        B, T, H, hd = x.shape
        xf = x.float().view(B, T, H, hd // 2, 2)
        x0, x1 = xf[..., 0], xf[..., 1]
        c = cos[:T][None, :, None, :]
        s = sin[:T][None, :, None, :]
        y = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
        return y.view(B, T, H, hd).type_as(x)

    class Attention(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.nh, self.nkv = c["n_heads"], c["n_kv_heads"]
            self.hd = c["dim"] // c["n_heads"]
            self.wq = nn.Linear(c["dim"], self.nh * self.hd, bias=False)
            self.wk = nn.Linear(c["dim"], self.nkv * self.hd, bias=False)
            self.wv = nn.Linear(c["dim"], self.nkv * self.hd, bias=False)
            self.wo = nn.Linear(self.nh * self.hd, c["dim"], bias=False)
            self.p = c["dropout"]
            self.drop = nn.Dropout(c["dropout"])
            self.capture = None

        def forward(self, x, cos, sin):
            B, T, _ = x.shape
            q = apply_rope(self.wq(x).view(B, T, self.nh, self.hd), cos, sin)
            k = apply_rope(self.wk(x).view(B, T, self.nkv, self.hd), cos, sin)
            v = self.wv(x).view(B, T, self.nkv, self.hd)
            if self.capture is not None:
                self.capture.append(k.detach().float().cpu())
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            if self.nkv != self.nh:
                r = self.nh // self.nkv
                k = k.repeat_interleave(r, dim=1)
                v = v.repeat_interleave(r, dim=1)
            p = self.p if self.training else 0.0
            if has_sdpa:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
            else:
                att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
                att = att.masked_fill(~mask, float("-inf")).float().softmax(-1).type_as(q)
                att = F.dropout(att, p, self.training)
                y = att @ v
            y = y.transpose(1, 2).reshape(B, T, self.nh * self.hd)
            return self.drop(self.wo(y))

    class FFN(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.w1 = nn.Linear(c["dim"], c["ffn"], bias=False)  # gate
            self.w3 = nn.Linear(c["dim"], c["ffn"], bias=False)  # up
            self.w2 = nn.Linear(c["ffn"], c["dim"], bias=False)  # down
            self.drop = nn.Dropout(c["dropout"])

        def forward(self, x):
            return self.drop(self.w2(F.silu(self.w1(x)) * self.w3(x)))

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.attn_norm = RMSNorm(c["dim"])
            self.attn = Attention(c)
            self.ffn_norm = RMSNorm(c["dim"])
            self.ffn = FFN(c)

        def forward(self, x, cos, sin):
            x = x + self.attn(self.attn_norm(x), cos, sin)
            return x + self.ffn(self.ffn_norm(x))

    class LM(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c
            self.tok = nn.Embedding(c["vocab"], c["dim"])
            self.blocks = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
            self.norm = RMSNorm(c["dim"])
            self.drop = nn.Dropout(c["dropout"])
            self.hd = c["dim"] // c["n_heads"]
            self._rope = None
            std = 0.02
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    s = std / math.sqrt(2 * c["n_layers"]) if name.endswith(("wo.weight", "w2.weight")) else std
                    nn.init.normal_(p, 0.0, s)

        def rope(self, T, device):
            if self._rope is None or self._rope[0].shape[0] < T or self._rope[0].device != device:
                self._rope = rope_tables(max(T, CTX), self.hd, 10000.0, device)
            return self._rope

        def forward(self, idx):
            cos, sin = self.rope(idx.shape[1], idx.device)
            x = self.drop(self.tok(idx))
            for b in self.blocks:
                x = b(x, cos, sin)
            x = self.norm(x)
            return x @ self.tok.weight.t().to(x.dtype)  # tied output

    return LM


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

def make_val_batches(ids, ctx):
    n = len(ids) // ctx
    if n == 0:
        return np.zeros((0, ctx), np.int64)
    x = ids[: n * ctx].reshape(n, ctx).astype(np.int64).copy()
    return x


def train_model(cfg, train_ids, val_ids, device, seed, ctx, max_steps=None):
    import torch
    import torch.nn.functional as F
    LM = build_model_classes()
    torch.manual_seed(seed)
    model = LM(cfg).to(device)
    n_params = count_params(model)
    log(f"[{cfg['name']}] params {n_params} ({n_params / 1e6:.2f}M), shape {json.dumps(cfg)}")
    use_cuda = device.type == "cuda"
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [dict(params=decay, weight_decay=0.1), dict(params=no_decay, weight_decay=0.0)]
    try:
        opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.95), eps=1e-8, fused=use_cuda)
    except TypeError:
        opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.95), eps=1e-8)

    data = torch.from_numpy(train_ids.astype(np.int64)).to(device)
    n_win = (len(train_ids) - 1 - ctx) // ctx
    B = cfg["batch"]
    steps_per_epoch = max(1, n_win // B)
    total_steps = steps_per_epoch * cfg["epochs"]
    if max_steps:
        total_steps = min(total_steps, max_steps)
    warmup = max(10, min(200, total_steps // 50))
    log(f"[{cfg['name']}] {len(train_ids)} training tokens, {n_win} windows of {ctx}, "
        f"batch {B}, {steps_per_epoch} steps/epoch, {total_steps} steps, warmup {warmup}")

    def lr_at(s):
        if s < warmup:
            return cfg["lr"] * (s + 1) / warmup
        t = (s - warmup) / max(1, total_steps - warmup)
        return cfg["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    val = torch.from_numpy(make_val_batches(val_ids, ctx + 1)).to(device)
    ar = torch.arange(ctx + 1, device=device)
    amp = dict(device_type="cuda", dtype=torch.bfloat16) if use_cuda else None

    def evaluate_val():
        model.eval()
        tot, cnt = 0.0, 0
        with torch.no_grad():
            for i in range(0, val.shape[0], 16):
                seq = val[i:i + 16]
                x = seq[:, :-1].clone()
                x[:, 0] = BOS
                y = seq[:, 1:]
                if amp:
                    with torch.autocast(**amp):
                        logits = model(x)
                else:
                    logits = model(x)
                l = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
                tot += l.item()
                cnt += y.numel()
        model.train()
        return tot / max(1, cnt)

    rng = np.random.default_rng(seed)
    best = (float("inf"), None, -1)
    step, t0, tok_seen = 0, time.time(), 0
    history = []
    stop = False
    last_loss = float("nan")
    ema = None
    model.train()
    for epoch in range(cfg["epochs"]):
        off = int(rng.integers(0, ctx))
        starts = off + np.arange(n_win) * ctx
        rng.shuffle(starts)
        starts_t = torch.from_numpy(starts.astype(np.int64)).to(device)
        for bi in range(steps_per_epoch):
            if step >= total_steps:
                stop = True
                break
            idx = starts_t[bi * B:(bi + 1) * B]
            seq = data[idx[:, None] + ar[None, :]]
            x = seq[:, :-1].clone()
            x[:, 0] = BOS
            y = seq[:, 1:]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            if amp:
                with torch.autocast(**amp):
                    logits = model(x)
            else:
                logits = model(x)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            tok_seen += y.numel()
            if step == 60:
                # fit the schedule into the wall-clock budget: measure steps 20..60, shorten if needed
                if use_cuda:
                    torch.cuda.synchronize()
                rate = 40.0 / max(time.time() - t_rate, 1e-9)
                budget_steps = int(step + rate * (cfg["train_seconds"] - (time.time() - t0)) * 0.97)
                if budget_steps < total_steps:
                    log(f"[{cfg['name']}] {rate:.1f} steps/s: shortening the schedule from {total_steps} "
                        f"to {budget_steps} steps to fit {cfg['train_seconds']}s")
                    total_steps = budget_steps
            if step == 20:
                if use_cuda:
                    torch.cuda.synchronize()
                t_rate = time.time()
            if step % 100 == 0 or step == 1:
                last_loss = loss.item()
                ema = last_loss if ema is None else 0.9 * ema + 0.1 * last_loss
                el = time.time() - t0
                log(f"[{cfg['name']}] step {step}/{total_steps} ep {epoch} loss {last_loss:.4f} "
                    f"lr {lr_at(step):.2e} {tok_seen / max(el, 1e-9) / 1e6:.2f}M tok/s")
            if time.time() - t0 > cfg["train_seconds"] * 1.05:
                log(f"[{cfg['name']}] wall-clock budget {cfg['train_seconds']}s reached, stopping")
                stop = True
                break
        last_loss = loss.item()
        vl = evaluate_val()
        el = time.time() - t0
        history.append(dict(epoch=epoch, step=step, train_loss=last_loss, val_loss=vl, seconds=el))
        log(f"[{cfg['name']}] epoch {epoch} done: step {step} train loss {last_loss:.4f} "
            f"val loss {vl:.4f} (ppl {math.exp(vl):.2f}) {el:.1f}s")
        if vl < best[0]:
            best = (vl, {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch)
        if stop:
            break
    if use_cuda:
        torch.cuda.synchronize()
    train_time = time.time() - t0
    model.load_state_dict(best[1])
    info = dict(params=n_params, train_tokens_per_epoch=int(n_win * ctx), steps=step,
                tokens_seen=int(tok_seen), train_seconds=round(train_time, 1),
                best_epoch=best[2], best_val_loss=best[0], history=history,
                final_train_loss=history[-1]["train_loss"] if history else None,
                best_epoch_train_loss=history[best[2]]["train_loss"] if history else None)
    log(f"[{cfg['name']}] training done in {train_time:.1f}s, {tok_seen / 1e6:.1f}M tokens, "
        f"best epoch {best[2]} val loss {best[0]:.4f}")
    return model, info


def round_weights_f16(model):
    """Round every matrix to f16 (as exported); norms stay f32.  Model in fp32 afterwards."""
    import torch
    model.float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())
    return model


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

def perplexity(model, ids, ctx, device, batch=16):
    """llama.cpp semantics: chunks of ctx, first token -> BOS, score second half."""
    import torch
    import torch.nn.functional as F
    n_chunks = len(ids) // ctx
    chunks = torch.from_numpy(ids[: n_chunks * ctx].reshape(n_chunks, ctx).astype(np.int64)).to(device)
    first = ctx // 2
    nlls = []
    model.eval()
    with torch.no_grad():
        for i in range(0, n_chunks, batch):
            x = chunks[i:i + batch].clone()
            x[:, 0] = BOS
            logits = model(x).float()
            lp = F.log_softmax(logits[:, first:ctx - 1], dim=-1)
            tgt = x[:, first + 1:ctx]
            nll = -lp.gather(-1, tgt[..., None])[..., 0]
            nlls.append(nll.double().cpu().numpy().reshape(-1))
    nll = np.concatenate(nlls) if nlls else np.zeros(0)
    mean = float(nll.mean()) if len(nll) else float("nan")
    ppl = math.exp(mean)
    # llama.cpp's uncertainty estimate of the perplexity
    if len(nll) > 1:
        var = float((nll ** 2).mean() - mean ** 2)
        err = ppl * math.sqrt(max(var, 0.0) / (len(nll) - 1))
    else:
        err = float("nan")
    return dict(ppl=ppl, ppl_stderr=err, mean_nll=mean, n_chunks=n_chunks, n_scored=int(len(nll)),
                n_tokens=int(len(ids)))


def hadamard(n):
    h = np.ones((1, 1), np.float64)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    assert h.shape[0] == n, "head_dim must be a power of two"
    return h / math.sqrt(n)


def excess_kurtosis_rows(x):
    """Per-row excess kurtosis with moments about zero: mean(x^4)/mean(x^2)^2 - 3."""
    m2 = (x ** 2).mean(-1)
    m4 = (x ** 4).mean(-1)
    return m4 / np.maximum(m2 ** 2, 1e-30) - 3.0


def excess_kurtosis_cols(x):
    """Per-column (channel) excess kurtosis across rows, central moments."""
    c = x - x.mean(0, keepdims=True)
    m2 = (c ** 2).mean(0)
    m4 = (c ** 4).mean(0)
    return m4 / np.maximum(m2 ** 2, 1e-30) - 3.0


def key_stats(model, ids, ctx, device, n_chunks=16, seed=1234):
    import torch
    n_chunks = max(1, min(n_chunks, len(ids) // ctx))
    chunks = torch.from_numpy(ids[: n_chunks * ctx].reshape(n_chunks, ctx).astype(np.int64)).to(device)
    chunks[:, 0] = BOS
    attns = [b.attn for b in model.blocks]
    for a in attns:
        a.capture = []
    model.eval()
    with torch.no_grad():
        for i in range(0, n_chunks, 8):
            model(chunks[i:i + 8])
    hd = attns[0].hd
    H = hadamard(hd)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=hd)
    rot = H * signs[None, :]  # y = H (s * x)  ->  y = rot @ x
    rows = []
    for li, a in enumerate(attns):
        k = torch.cat(a.capture, 0).numpy().astype(np.float64)  # N, T, nkv, hd
        a.capture = None
        nkv = k.shape[2]
        k = k.reshape(-1, nkv, hd)
        ratios, vk_b, vk_a, ck_b, ck_a = [], [], [], [], []
        for h in range(nkv):
            kh = k[:, h, :]
            rms = np.sqrt((kh ** 2).mean(0))
            ratios.append(float(rms.max() / np.median(rms)))
            kr = kh @ rot.T
            vk_b.append(float(excess_kurtosis_rows(kh).mean()))
            vk_a.append(float(excess_kurtosis_rows(kr).mean()))
            ck_b.append(float(excess_kurtosis_cols(kh).mean()))
            ck_a.append(float(excess_kurtosis_cols(kr).mean()))
        kf = k.reshape(-1, hd)
        rows.append(dict(layer=li, rms_ratio_mean=float(np.mean(ratios)), rms_ratio_max=float(np.max(ratios)),
                         vec_kurt_before=float(np.mean(vk_b)), vec_kurt_after=float(np.mean(vk_a)),
                         chan_kurt_before=float(np.mean(ck_b)), chan_kurt_after=float(np.mean(ck_a)),
                         key_abs_max=float(np.abs(kf).max()), key_rms=float(np.sqrt((kf ** 2).mean()))))
    return dict(n_tokens=int(n_chunks * ctx), hadamard_seed=seed, layers=rows)


# ----------------------------------------------------------------------------------------------
# GGUF writer (numpy only)
# ----------------------------------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
GGUF_ALIGN = 32
T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
GGML_F32, GGML_F16 = 0, 1


class GGUFWriter:
    def __init__(self):
        self.kv = []       # (key, type, value, subtype)
        self.tensors = []  # (name, np.ndarray, ggml_type)

    def add(self, key, vtype, value, subtype=None):
        self.kv.append((key, vtype, value, subtype))

    def add_tensor(self, name, arr, ggml_type):
        arr = np.ascontiguousarray(arr, dtype=np.float16 if ggml_type == GGML_F16 else np.float32)
        self.tensors.append((name, arr, ggml_type))

    @staticmethod
    def _str(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def _scalar(self, t, v):
        fmt = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i",
               T_F32: "<f", T_BOOL: "<?", T_U64: "<Q", T_I64: "<q", T_F64: "<d"}
        if t == T_STR:
            return self._str(v)
        return struct.pack(fmt[t], v)

    def write(self, path):
        out = io.BytesIO()
        out.write(GGUF_MAGIC)
        out.write(struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv)))
        for key, t, v, sub in self.kv:
            out.write(self._str(key))
            out.write(struct.pack("<I", t))
            if t == T_ARR:
                out.write(struct.pack("<IQ", sub, len(v)))
                if sub == T_STR:
                    for s in v:
                        out.write(self._str(s))
                elif sub == T_F32:
                    out.write(np.asarray(v, "<f4").tobytes())
                elif sub == T_I32:
                    out.write(np.asarray(v, "<i4").tobytes())
                else:
                    for x in v:
                        out.write(self._scalar(sub, x))
            else:
                out.write(self._scalar(t, v))
        offset = 0
        offsets = []
        for name, arr, gt in self.tensors:
            out.write(self._str(name))
            ne = list(reversed(arr.shape))  # ggml order: fastest-varying dimension first
            out.write(struct.pack("<I", len(ne)))
            for d in ne:
                out.write(struct.pack("<Q", d))
            out.write(struct.pack("<I", gt))
            out.write(struct.pack("<Q", offset))
            offsets.append(offset)
            offset += arr.nbytes
            offset += (-offset) % GGUF_ALIGN
        out.write(b"\0" * ((-out.tell()) % GGUF_ALIGN))
        data_start = out.tell()
        for (name, arr, gt), off in zip(self.tensors, offsets):
            pad = data_start + off - out.tell()
            assert pad >= 0
            out.write(b"\0" * pad)
            out.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        out.write(b"\0" * ((-out.tell()) % GGUF_ALIGN))
        with open(path, "wb") as f:
            f.write(out.getvalue())


def export_gguf(model, cfg, sp, path, train_info):
    c = cfg
    hd = c["dim"] // c["n_heads"]
    w = GGUFWriter()
    w.add("general.architecture", T_STR, "llama")
    w.add("general.name", T_STR, c["name"])
    w.add("general.description", T_STR,
          "tqkv reference model trained by tools/train_reference_lm.py on public-domain English text")
    w.add("general.license", T_STR, "public-domain training data; model CC0")
    w.add("general.file_type", T_U32, 1)  # LLAMA_FTYPE_MOSTLY_F16
    w.add("general.alignment", T_U32, GGUF_ALIGN)
    w.add("llama.vocab_size", T_U32, c["vocab"])
    w.add("llama.context_length", T_U32, CTX)
    w.add("llama.embedding_length", T_U32, c["dim"])
    w.add("llama.block_count", T_U32, c["n_layers"])
    w.add("llama.feed_forward_length", T_U32, c["ffn"])
    w.add("llama.attention.head_count", T_U32, c["n_heads"])
    w.add("llama.attention.head_count_kv", T_U32, c["n_kv_heads"])
    w.add("llama.rope.dimension_count", T_U32, hd)
    w.add("llama.rope.freq_base", T_F32, 10000.0)
    w.add("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5)
    tokens, scores, types = tokenizer_gguf_fields(sp)
    w.add("tokenizer.ggml.model", T_STR, "llama")
    w.add("tokenizer.ggml.tokens", T_ARR, tokens, T_STR)
    w.add("tokenizer.ggml.scores", T_ARR, scores, T_F32)
    w.add("tokenizer.ggml.token_type", T_ARR, types, T_I32)
    w.add("tokenizer.ggml.bos_token_id", T_U32, BOS)
    w.add("tokenizer.ggml.eos_token_id", T_U32, EOS)
    w.add("tokenizer.ggml.unknown_token_id", T_U32, UNK)
    w.add("tokenizer.ggml.add_bos_token", T_BOOL, True)
    w.add("tokenizer.ggml.add_eos_token", T_BOOL, False)

    sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["tok.weight"], GGML_F16)
    for i in range(c["n_layers"]):
        p = f"blocks.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "attn_norm.weight"], GGML_F32)
        w.add_tensor(f"blk.{i}.attn_q.weight", sd[p + "attn.wq.weight"], GGML_F16)
        w.add_tensor(f"blk.{i}.attn_k.weight", sd[p + "attn.wk.weight"], GGML_F16)
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "attn.wv.weight"], GGML_F16)
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "attn.wo.weight"], GGML_F16)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "ffn_norm.weight"], GGML_F32)
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "ffn.w1.weight"], GGML_F16)
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "ffn.w3.weight"], GGML_F16)
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "ffn.w2.weight"], GGML_F16)
    w.add_tensor("output_norm.weight", sd["norm.weight"], GGML_F32)
    # no output.weight: tied to token_embd.weight (llama.cpp falls back to token_embd)
    w.write(path)


# ----------------------------------------------------------------------------------------------
# Independent minimal GGUF reader + numpy forward (self-check)
# ----------------------------------------------------------------------------------------------

def read_gguf(path):
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(n):
        nonlocal pos
        b = buf[pos:pos + n]
        if len(b) != n:
            raise ValueError("truncated GGUF")
        pos += n
        return b

    def u32():
        return struct.unpack("<I", take(4))[0]

    def u64():
        return struct.unpack("<Q", take(8))[0]

    def string():
        return take(u64()).decode("utf-8")

    sizes = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
             6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            st, n = u32(), u64()
            return [value(st) for _ in range(n)]
        fmt, n = sizes[t]
        return struct.unpack(fmt, take(n))[0]

    if take(4) != b"GGUF":
        raise ValueError("not GGUF")
    version = u32()
    n_t, n_kv = u64(), u64()
    meta = {}
    for _ in range(n_kv):
        k = string()
        meta[k] = value(u32())
    infos = []
    for _ in range(n_t):
        name = string()
        nd = u32()
        ne = [u64() for _ in range(nd)]
        gt = u32()
        off = u64()
        infos.append((name, ne, gt, off))
    align = meta.get("general.alignment", 32)
    data = pos + ((-pos) % align)
    tensors = {}
    for name, ne, gt, off in infos:
        dt = {0: np.dtype("<f4"), 1: np.dtype("<f2")}[gt]
        n = int(np.prod(ne))
        a = np.frombuffer(buf, dtype=dt, count=n, offset=data + off)
        tensors[name] = a.reshape(list(reversed(ne))).astype(np.float32)
    return version, meta, tensors


def numpy_forward(meta, t, tokens):
    a = "llama."
    dim = meta[a + "embedding_length"]
    L = meta[a + "block_count"]
    nh = meta[a + "attention.head_count"]
    nkv = meta[a + "attention.head_count_kv"]
    eps = meta[a + "attention.layer_norm_rms_epsilon"]
    theta = meta[a + "rope.freq_base"]
    hd = dim // nh
    nrot = meta[a + "rope.dimension_count"]
    T = len(tokens)
    emb = t["token_embd.weight"]
    out_w = t.get("output.weight", emb)
    x = emb[np.asarray(tokens)]

    def rms(v, w):
        return (v / np.sqrt((v * v).mean(-1, keepdims=True) + eps)).astype(np.float32) * w

    pos = np.arange(T, dtype=np.float64)
    inv = theta ** (-np.arange(0, nrot, 2, dtype=np.float64) / nrot)
    ang = pos[:, None] * inv[None, :]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)

    def rope(v):  # T, H, hd ; ggml rope mode 0 (adjacent pairs)
        v = v.copy()
        x0 = v[..., 0:nrot:2].copy()
        x1 = v[..., 1:nrot:2].copy()
        v[..., 0:nrot:2] = x0 * cos[:, None, :] - x1 * sin[:, None, :]
        v[..., 1:nrot:2] = x0 * sin[:, None, :] + x1 * cos[:, None, :]
        return v

    mask = np.triu(np.full((T, T), -np.inf, np.float32), 1)
    for i in range(L):
        p = f"blk.{i}."
        h = rms(x, t[p + "attn_norm.weight"])
        q = rope((h @ t[p + "attn_q.weight"].T).reshape(T, nh, hd))
        k = rope((h @ t[p + "attn_k.weight"].T).reshape(T, nkv, hd))
        v = (h @ t[p + "attn_v.weight"].T).reshape(T, nkv, hd)
        o = np.zeros((T, nh, hd), np.float32)
        for hh in range(nh):
            kv = hh // (nh // nkv)
            s = (q[:, hh] @ k[:, kv].T) / np.float32(math.sqrt(hd)) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o[:, hh] = s @ v[:, kv]
        x = x + o.reshape(T, nh * hd) @ t[p + "attn_output.weight"].T
        h = rms(x, t[p + "ffn_norm.weight"])
        g = h @ t[p + "ffn_gate.weight"].T
        u = h @ t[p + "ffn_up.weight"].T
        x = x + ((g / (1.0 + np.exp(-g))) * u) @ t[p + "ffn_down.weight"].T
    x = rms(x, t["output_norm.weight"])
    return x @ out_w.T


def self_check(path, model, tokens, device):
    import torch
    version, meta, t = read_gguf(path)
    assert version == 3 and meta["general.architecture"] == "llama"
    np_logits = numpy_forward(meta, t, tokens)
    model.eval()
    with torch.no_grad():
        pt = model(torch.tensor([tokens], dtype=torch.long, device=device)).float()[0].cpu().numpy()
    agree = float((np_logits.argmax(-1) == pt.argmax(-1)).mean())
    maxdiff = float(np.abs(np_logits - pt).max())
    return dict(n_tokens=len(tokens), top1_agreement=agree, max_abs_logit_diff=maxdiff,
                logit_scale=float(np.abs(pt).max()), n_tensors=len(t), n_kv=len(meta))


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    default_data = os.path.join(here, "..", ".data")
    if not os.path.isdir(default_data):
        default_data = os.path.join(here, "..", "..", "shared", "corpora")
    ap.add_argument("--data-dir", default=default_data)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="d128,d64", help="comma list of " + ",".join(CONFIGS))
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--heldout-part-bytes", type=int, default=163840,
                    help="max UTF-8 bytes of each corpus' held-out prefix in heldout.txt")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=0, help="override the epochs of every model")
    ap.add_argument("--smoke", action="store_true", help="tiny data and models, a few steps (CPU ok)")
    args = ap.parse_args()

    import torch
    os.makedirs(args.out, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log(f"torch {torch.__version__} device {device} "
        f"{torch.cuda.get_device_name(0) if device.type == 'cuda' else ''} argv {sys.argv}")
    t_start = time.time()
    ctx = 128 if args.smoke else CTX
    vocab = 512 if args.smoke else args.vocab

    parts, heldout_text = load_data(args.data_dir, args.heldout_part_bytes, args.smoke)
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(heldout_text)
    sp = train_tokenizer(parts, vocab, args.out, args.smoke)

    t0 = time.time()
    train_ids = np.concatenate([encode_big(sp, p["train"]) for p in parts])
    val_ids = np.concatenate([encode_big(sp, p["val"]) if p["val"] else np.zeros(0, np.int32) for p in parts])
    if len(val_ids) < 4 * (ctx + 1):  # smoke or tiny remainders: fall back to the held-out parts
        val_ids = np.concatenate([encode_big(sp, p["held"]) for p in parts])
    heldout_ids = np.asarray(sp.encode(heldout_text), dtype=np.int32)  # whole file, no BOS
    log(f"tokens: train {len(train_ids)}, validation {len(val_ids)}, heldout.txt {len(heldout_ids)} "
        f"({len(heldout_text.encode('utf-8'))} bytes) in {time.time() - t0:.1f}s")
    np.asarray(heldout_ids, "<u2").tofile(os.path.join(args.out, "heldout.tokens.u16"))

    summary = dict(argv=sys.argv, torch=torch.__version__, device=str(device),
                   gpu=torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                   data=[dict(name=p["name"], chars=p["n_chars"], train_chars=len(p["train"]),
                              heldout_chars=len(p["held"]), eval_chars=len(p["eval"]),
                              val_chars=len(p["val"]), sha256_utf8=p["sha256"]) for p in parts],
                   heldout_bytes=len(heldout_text.encode("utf-8")),
                   heldout_sha256=hashlib.sha256(heldout_text.encode("utf-8")).hexdigest(),
                   heldout_tokens=int(len(heldout_ids)), train_tokens=int(len(train_ids)),
                   val_tokens=int(len(val_ids)), vocab=vocab,
                   tokenizer_sha256=sha256_file(os.path.join(args.out, "tokenizer.model")), models={})

    table = CONFIGS if not args.smoke else SMOKE_CONFIGS
    for i, key in enumerate(args.models.split(",")):
        cfg = dict(table[key])
        cfg["vocab"] = vocab
        if args.epochs:
            cfg["epochs"] = args.epochs
        model, info = train_model(cfg, train_ids, val_ids, device, args.seed + i, ctx,
                                  max_steps=70 if args.smoke else None)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        model = model.float()
        ppl_fp32 = perplexity(model, heldout_ids, ctx, device)
        round_weights_f16(model)
        ppl_f16 = perplexity(model, heldout_ids, ctx, device)
        log(f"[{cfg['name']}] held-out perplexity (ctx {ctx}): f16 weights {ppl_f16['ppl']:.4f} "
            f"+/- {ppl_f16['ppl_stderr']:.4f} (fp32 weights {ppl_fp32['ppl']:.4f}) over "
            f"{ppl_f16['n_chunks']} chunks, {ppl_f16['n_scored']} scored tokens")
        ks = key_stats(model, heldout_ids, ctx, device)
        for r in ks["layers"]:
            log(f"[{cfg['name']}] keys layer {r['layer']}: rms max/median {r['rms_ratio_mean']:.2f} "
                f"(max {r['rms_ratio_max']:.2f}) vec-kurt {r['vec_kurt_before']:.2f} -> {r['vec_kurt_after']:.2f} "
                f"chan-kurt {r['chan_kurt_before']:.2f} -> {r['chan_kurt_after']:.2f}")
        path = os.path.join(args.out, cfg["name"] + ".gguf")
        export_gguf(model, cfg, sp, path, info)
        check_tokens = [BOS] + [int(x) for x in heldout_ids[1:64]]
        chk = self_check(path, model, check_tokens, device)
        log(f"[{cfg['name']}] self-check: GGUF re-read ({chk['n_tensors']} tensors, {chk['n_kv']} keys), "
            f"numpy vs PyTorch over {chk['n_tokens']} tokens: top-1 agreement {chk['top1_agreement'] * 100:.1f}%, "
            f"max |logit diff| {chk['max_abs_logit_diff']:.3e} (max |logit| {chk['logit_scale']:.2f})")
        if chk["top1_agreement"] < 1.0:
            log(f"[{cfg['name']}] SELF-CHECK FAILED")
        size = os.path.getsize(path)
        summary["models"][cfg["name"]] = dict(config=cfg, head_dim=cfg["dim"] // cfg["n_heads"],
                                              gqa_ratio=cfg["n_heads"] // cfg["n_kv_heads"], train=info,
                                              perplexity_f16_weights=ppl_f16, perplexity_fp32_weights=ppl_fp32,
                                              key_stats=ks, self_check=chk, gguf_bytes=size,
                                              gguf_sha256=sha256_file(path))
        log(f"[{cfg['name']}] wrote {path}: {size} bytes, sha256 {summary['models'][cfg['name']]['gguf_sha256']}")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    summary["total_seconds"] = round(time.time() - t_start, 1)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    ok = all(m["self_check"]["top1_agreement"] == 1.0 for m in summary["models"].values())
    log(f"all done in {summary['total_seconds']}s; self-check {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
