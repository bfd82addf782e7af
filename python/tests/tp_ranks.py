"""The gloo ranks of python/tests/test_tp.py: `tp_ranks.py WORLD OUT_DIR N_NEW SOURCE_DIR` spawns
WORLD processes (torch.multiprocessing), each joins a gloo group and runs tiny_llama.TensorParallel's
greedy decoding for every model (tiny_llama.models) and cache configuration, then saves its tokens,
logits and the digests of its cache's stored bytes to OUT_DIR/rank<r>.pt. Run by the test; not a
test itself."""
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def run_rank(rank, world, out_dir, n_new, source_dir):
    torch.set_num_threads(1)
    import tqkv
    import tiny_llama

    tqkv.set_threads(1)
    dist.init_process_group("gloo", init_method="file://" + os.path.join(out_dir, "rendezvous"), rank=rank,
                            world_size=world)
    results = {}
    for model_name, w, cfg, prompt in tiny_llama.models(source_dir, world):
        for name, config in tiny_llama.cache_configs():
            model = tiny_llama.TensorParallel(w, config, rank, world, cfg)
            toks, logits = tiny_llama.greedy(model, prompt, n_new)
            results[(model_name, name)] = {"tokens": toks, "logits": logits, "digests": model.digests(),
                                           "shards": [repr(a.shard) for a in model.attn]}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    world, out_dir, n_new, source_dir = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    mp.spawn(run_rank, args=(world, out_dir, n_new, source_dir), nprocs=world, join=True)
