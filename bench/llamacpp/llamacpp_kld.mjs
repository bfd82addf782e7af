// llama.cpp side of the tqkv bake-off: perplexity and exact KLD (whole vocabulary) of llama.cpp's
// quantized KV caches against its own f16 cache, with tqkv's llama-perplexity protocol:
// chunks of CTX tokens of the tokenized text, the first token of each chunk replaced by BOS,
// positions CTX/2 .. CTX-2 scored (next-token prediction).
//
//   cd bench/llamacpp && npm ci            # node-llama-cpp pinned to 3.21.1 (package.json)
//   node llamacpp_kld.mjs --model ../../models/tqkv-ref-d128.gguf --text ../../models/eval/heldout.txt \
//        --ctx 1024 --chunks 4 --types f16/f16,q8_0/q8_0,q4_0/q4_0,iq4_nl/iq4_nl > ../results/llamacpp-d128.json
//
// DISCLOSURE: current llama.cpp ROTATES quantized K/V caches with a Hadamard transform by default
// (its log shows attn_rot_k = 1; LLAMA_ATTN_ROT_DISABLE=1 turns it off). So its "q4_0" cache here
// is rotated q4_0, not the plain q4_0 layout of tqkv's `q4_0` format.
// Probabilities: node-llama-cpp's controlledEvaluate returns float32 probabilities per token; they
// are renormalized in double (sum over the whole vocabulary) before taking logs.
// CPU-heavy: every configuration re-evaluates every chunk; keep --chunks small on a shared box.
import {getLlama} from "node-llama-cpp";
import fs from "node:fs";

function args() {
  const a = {ctx: 1024, chunks: 4, types: "f16/f16,q8_0/q8_0,q4_0/q4_0", threads: 2};
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i += 2) a[v[i].replace(/^--/, "")] = v[i + 1];
  a.ctx = Number(a.ctx);
  a.chunks = Number(a.chunks);
  a.threads = Number(a.threads);
  if (!a.model || !a.text) throw new Error("usage: --model GGUF --text FILE [--ctx N] [--chunks N] [--types k/v,...]");
  return a;
}

const BITS = {f32: 32, f16: 16, bf16: 16, q8_0: 8.5, q5_0: 5.5, q5_1: 6, q4_0: 4.5, q4_1: 5, iq4_nl: 4.5};
const GGML = {f32: "F32", f16: "F16", bf16: "BF16", q8_0: "Q8_0", q5_0: "Q5_0", q5_1: "Q5_1", q4_0: "Q4_0", q4_1: "Q4_1", iq4_nl: "IQ4_NL"};

// Log-probabilities (Float64Array over the vocabulary) from node-llama-cpp's probability map.
function logprobs(map, vocab) {
  const p = new Float64Array(vocab);
  let sum = 0;
  for (const [tok, prob] of map) {
    p[tok] = prob;
    sum += prob;
  }
  for (let i = 0; i < vocab; ++i) p[i] = p[i] > 0 ? Math.log(p[i] / sum) : -Infinity;
  return p;
}

async function evalChunk(context, tokens, first) {
  const seq = context.getSequence();
  const input = tokens.map((t, i) => (i >= first && i < tokens.length - 1 ? [t, {generateNext: {probabilities: true}}] : t));
  const out = await seq.controlledEvaluate(input);
  seq.dispose();
  const res = [];
  for (let i = first; i < tokens.length - 1; ++i) res.push(out[i].next.probabilities);
  return res;
}

async function main() {
  const a = args();
  const llama = await getLlama({gpu: false});
  const model = await llama.loadModel({modelPath: a.model});
  let vocab = 0;  // the probability maps cover the whole vocabulary
  const text = fs.readFileSync(a.text, "utf8");
  const all = model.tokenize(text);
  const bos = model.tokens.bos;
  const n = Math.min(a.chunks, Math.floor(all.length / a.ctx));
  const first = a.ctx / 2;
  const configs = a.types.split(",").map((s) => s.split("/"));
  if (configs[0][0] !== "f16" || configs[0][1] !== "f16") configs.unshift(["f16", "f16"]);
  const contexts = [];
  for (const [k, v] of configs)
    contexts.push(await model.createContext({contextSize: a.ctx, batchSize: 512, threads: a.threads, sequences: 1,
      experimentalKvCacheKeyType: GGML[k], experimentalKvCacheValueType: GGML[v]}));
  const acc = configs.map(() => ({nll: 0, kld: [], top1: 0}));
  let scored = 0;
  for (let c = 0; c < n; ++c) {
    const tokens = all.slice(c * a.ctx, (c + 1) * a.ctx);
    tokens[0] = bos;
    let base = null;
    for (let j = 0; j < configs.length; ++j) {
      const probs = await evalChunk(contexts[j], tokens, first);
      if (!vocab) vocab = probs[0].size;
      const lps = probs.map((m) => logprobs(m, vocab));
      if (j === 0) base = lps;
      for (let i = 0; i < lps.length; ++i) {
        const next = tokens[first + i + 1];
        acc[j].nll -= lps[i][next];
        let kld = 0, am = 0, bm = 0;
        for (let t = 0; t < vocab; ++t) {
          const lb = base[i][t];
          if (lb > -Infinity) kld += Math.exp(lb) * (lb - lps[i][t]);
          if (lps[i][t] > lps[i][am]) am = t;
          if (lb > base[i][bm]) bm = t;
        }
        acc[j].kld.push(kld);
        acc[j].top1 += am === bm ? 1 : 0;
      }
      process.stderr.write(`chunk ${c + 1}/${n} ${configs[j].join("/")}\n`);
    }
    scored += a.ctx - 1 - first;
  }
  const rows = configs.map(([k, v], j) => {
    const s = [...acc[j].kld].sort((x, y) => x - y);
    return {label: `llama.cpp ${k}/${v}`, bits: (BITS[k] + BITS[v]) / 2, ppl: Math.exp(acc[j].nll / scored),
      kld_mean: s.reduce((x, y) => x + y, 0) / s.length, kld_p99: s[Math.min(s.length - 1, Math.floor(0.99 * s.length))],
      top1_agreement: acc[j].top1 / scored};
  });
  console.log(JSON.stringify({tool: "node-llama-cpp 3.21.1 (prebuilt llama.cpp CPU binaries)", model: a.model, ctx: a.ctx,
    chunks: n, scored_positions: scored, rotation_note: "llama.cpp rotates quantized K/V caches (Hadamard) by default",
    rows}, null, 1));
  for (const c of contexts) await c.dispose();
}

main().catch((e) => {
  console.error("llamacpp_kld: error: " + (e && e.message ? e.message : e));
  process.exit(1);
});
