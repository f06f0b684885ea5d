#!/usr/bin/python3
"""DDP training on CPU with bccl as the torch.distributed backend, checked against gloo.

Why it exists: it shows the one thing bccl is for (gradient allreduce under a training framework)
and proves the backend computes what gloo computes. In each run, every rank trains the same MLP
(a few million parameters) twice from the same seed on the same data: once with DDP over a bccl
group and once over a gloo group. Rank 0's loss must agree step by step between the two. It then
times allreduce through torch.distributed for both backends (busbw, as nccl-tests defines it).

    /usr/bin/python3 examples/pytorch_ddp.py                 # starts 4-rank and 2-rank runs itself
    /usr/bin/python3 examples/pytorch_ddp.py --steps 300 --worlds 4
    torchrun --nproc_per_node 4 --redirects 1 --tee 1 examples/pytorch_ddp.py   # one run, as launched

It imports bccl_torch: set PYTHONPATH to a build's python/ directory (e.g. build/python) unless
the module is installed. Debian's torchrun 1.13 on Python 3.11 needs `--redirects 1 --tee 1`.
"""

import argparse
import datetime
import json
import os
import socket
import statistics
import sys
import tempfile
import time

# The ranks share the machine's cores: one compute thread each, fixed before torch loads its BLAS
# (OpenBLAS would otherwise start a thread per core in every rank).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100, help="training steps per backend (default 100)")
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the time per step")
    p.add_argument("--worlds", default="4,2", help="rank counts to run, comma-separated (default 4,2)")
    p.add_argument("--batch", type=int, default=8, help="samples per rank per step (small: communication-bound)")
    p.add_argument("--model", choices=["mlp", "embedding"], default="mlp",
                   help="mlp: dense layers (compute grows with the batch); embedding: an EmbeddingBag "
                        "with dense gradients and a linear head, as in recommendation models, where the "
                        "gradient allreduce dominates the step")
    p.add_argument("--width", type=int, default=1024, help="MLP width (default 1024: 3.4M parameters)")
    p.add_argument("--vocab", type=int, default=50000, help="embedding rows (default 50000 x 64: 3.2M parameters)")
    p.add_argument("--depth", type=int, default=4, help="hidden layers")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest relative loss difference accepted between backends")
    p.add_argument("--print-every", type=int, default=1, help="print every Nth step's losses")
    p.add_argument("--bench-sizes", default="65536,1048576,8388608,33554432",
                   help="allreduce sizes in bytes for the busbw table")
    p.add_argument("--no-bench", action="store_true", help="skip the allreduce busbw table")
    return p.parse_args(argv)


class EmbeddingRegressor(torch.nn.Module):
    """A bag of ids -> mean of their embeddings -> linear head. Dense gradients (sparse=False):
    every step allreduces the whole table, while the arithmetic per step stays tiny."""

    def __init__(self, vocab):
        super().__init__()
        self.table = torch.nn.EmbeddingBag(vocab, 64, mode="mean")
        self.head = torch.nn.Linear(64, 16)

    def forward(self, ids):
        return self.head(self.table(ids))


def make_model(args):
    torch.manual_seed(args.seed)
    if args.model == "embedding":
        return EmbeddingRegressor(args.vocab)
    layers, width_in = [], 256
    for _ in range(args.depth):
        layers += [torch.nn.Linear(width_in, args.width), torch.nn.Tanh()]
        width_in = args.width
    layers.append(torch.nn.Linear(width_in, 16))
    return torch.nn.Sequential(*layers)


def train(args, group, rank):
    """Trains a fresh model with DDP over `group`; returns (rank 0's losses, seconds per step)."""
    # Gradients live in the allreduce buckets (no copy in and out of them), as large jobs set it.
    model = torch.nn.parallel.DistributedDataParallel(make_model(args), process_group=group,
                                                      gradient_as_bucket_view=True)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    data = torch.Generator().manual_seed(args.seed * 1000 + rank)  # same stream for both backends
    teacher = torch.Generator().manual_seed(args.seed)
    if args.model == "embedding":
        t_true = torch.randn(args.vocab, 16, generator=teacher)
    else:
        w_true = torch.randn(256, 16, generator=teacher) / 16
    losses, times = [], []
    dist.barrier(group=group)
    for step in range(args.steps):
        start = time.perf_counter()
        if args.model == "embedding":
            x = torch.randint(0, args.vocab, (args.batch, 16), generator=data)
            y = torch.tanh(t_true[x].mean(1))
        else:
            x = torch.randn(args.batch, 256, generator=data)
            y = torch.tanh(x @ w_true)
        opt.zero_grad(set_to_none=False)  # bucket views stay (set_to_none would drop them)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()  # DDP allreduces the gradient buckets here
        opt.step()
        losses.append(loss.item())
        times.append(time.perf_counter() - start)
    dist.barrier(group=group)
    # The median step: on a shared machine, other work's bursts land in a few steps' times.
    per_step = statistics.median(times[args.warmup:] or times)
    return losses, per_step, sum(p.numel() for p in model.parameters())


def bench_allreduce(args, group, world):
    """busbw of float32 allreduce through torch.distributed: bytes * 2(n-1)/n / median time."""
    rows = []
    for size in [int(s) for s in args.bench_sizes.split(",")]:
        t = torch.ones(size // 4)
        iters = max(10, min(200, (64 << 20) // max(size, 1)))
        for _ in range(3):
            dist.all_reduce(t, group=group)
        dist.barrier(group=group)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            dist.all_reduce(t, group=group)
            times.append(time.perf_counter() - start)
        elapsed = statistics.median(times)
        rows.append({"bytes": size, "us": elapsed * 1e6, "busbw": size * 2 * (world - 1) / world / elapsed / 1e9})
    return rows


def worker(rank, world, port, args, out_path):
    import bccl_torch  # noqa: F401  (registers the "bccl" backend)

    if port is not None:  # started by this script rather than torchrun
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)  # the ranks share the machine's cores
    timeout = datetime.timedelta(minutes=5)
    dist.init_process_group("bccl", rank=rank, world_size=world, timeout=timeout)
    groups = {"bccl": dist.group.WORLD, "gloo": dist.new_group(backend="gloo", timeout=timeout)}
    result = {"world": world}
    for name, group in groups.items():
        losses, per_step, params = train(args, group, rank)
        result[name] = {"losses": losses, "per_step": per_step}
        result["params"] = params
    if not args.no_bench:
        for name, group in groups.items():
            result[name]["bench"] = bench_allreduce(args, group, world)
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(result, f)


def report(args, r):
    world, bccl, gloo = r["world"], r["bccl"], r["gloo"]
    print(f"\n=== {world} ranks: DDP, {args.model}, {r['params'] / 1e6:.2f}M parameters, batch {args.batch}/rank, "
          f"{args.steps} steps")
    print(f"{'step':>6} {'loss (bccl)':>16} {'loss (gloo)':>16} {'difference':>12}")
    worst = 0.0
    for i, (a, b) in enumerate(zip(bccl["losses"], gloo["losses"])):
        rel = abs(a - b) / max(abs(b), 1e-12)
        worst = max(worst, rel)
        if i % args.print_every == 0 or i == args.steps - 1:
            print(f"{i:>6} {a:>16.8f} {b:>16.8f} {a - b:>12.3e}")
    ok = worst <= args.tolerance
    print(f"max relative loss difference: {worst:.3e} ({'agree' if ok else 'DISAGREE'}; tolerance {args.tolerance})")
    speedup = gloo["per_step"] / bccl["per_step"]
    print(f"time per step (median): bccl {bccl['per_step'] * 1e3:.2f} ms, gloo {gloo['per_step'] * 1e3:.2f} ms "
          f"(bccl {speedup:.2f}x faster)")
    if "bench" in bccl:
        print(f"allreduce through torch.distributed, float32, {world} ranks:")
        print(f"{'bytes':>12} {'bccl us':>10} {'bccl busbw':>11} {'gloo us':>10} {'gloo busbw':>11}")
        for a, b in zip(bccl["bench"], gloo["bench"]):
            print(f"{a['bytes']:>12} {a['us']:>10.1f} {a['busbw']:>9.2f}GB/s {b['us']:>10.1f} {b['busbw']:>9.2f}GB/s")
    return ok, speedup


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    args = parse_args()
    if "LOCAL_RANK" in os.environ and "RANK" in os.environ:  # under torchrun: one run, as launched
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.json")
            worker(rank, world, None, args, out)
            if rank == 0:
                with open(out) as f:
                    return 0 if report(args, json.load(f))[0] else 1
        return 0
    all_ok, summary = True, []
    for world in [int(w) for w in args.worlds.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.json")
            started = time.time()
            mp.spawn(worker, args=(world, free_port(), args, out), nprocs=world, join=True)
            with open(out) as f:
                result = json.load(f)
        ok, speedup = report(args, result)
        print(f"({world}-rank run took {time.time() - started:.1f} s)")
        all_ok &= ok
        summary.append((world, result, speedup))
    print("\n=== summary")
    for world, r, speedup in summary:
        line = (f"{world} ranks: step bccl {r['bccl']['per_step'] * 1e3:.2f} ms, gloo {r['gloo']['per_step'] * 1e3:.2f} ms "
                f"({speedup:.2f}x)")
        if "bench" in r["bccl"]:
            a, b = r["bccl"]["bench"][-1], r["gloo"]["bench"][-1]
            line += f"; allreduce {a['bytes'] >> 20} MiB busbw bccl {a['busbw']:.2f} GB/s, gloo {b['busbw']:.2f} GB/s"
        print(line)
    print("losses agree" if all_ok else "LOSSES DISAGREE")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
