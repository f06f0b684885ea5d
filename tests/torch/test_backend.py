#!/usr/bin/env python3
"""The bccl torch.distributed backend, end to end, in real processes.

Why a standalone script and not pytest: Debian's /usr/bin/python3 (the one with torch) has no
pytest, and every check needs several cooperating processes anyway. The parent starts each
scenario's ranks as subprocesses (env RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT, as torchrun
would), bounds them with a timeout, and collects the per-rank CHECK lines they print. A check
passes when every rank that ran it passed it. The last line is `N passed, M failed`.

    PYTHONPATH=build/python /usr/bin/python3 tests/torch/test_backend.py [-v] [-k SUBSTRING]
"""

import argparse
import datetime
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

PG_TIMEOUT_S = 60  # every bccl wait; a dead rank must be reported well before this

# ---------------------------------------------------------------------------------------------
# Worker side: runs in each rank.
# ---------------------------------------------------------------------------------------------


def report(name, ok, detail=""):
    detail = detail.replace("\n", " | ").replace("\t", " ")[:600]
    print(f"CHECK\t{name}\t{'PASS' if ok else 'FAIL'}\t{detail}", flush=True)


def run_check(name, fn, only):
    if only and only not in name:
        return
    try:
        fn()
        report(name, True)
    except Exception:  # noqa: BLE001 (every failure is a result, not a crash)
        report(name, False, traceback.format_exc(limit=4))


def worker_collectives(only):
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16,
              torch.int8, torch.uint8, torch.int32, torch.int64]
    ops = {"sum": dist.ReduceOp.SUM, "product": dist.ReduceOp.PRODUCT, "min": dist.ReduceOp.MIN,
           "max": dist.ReduceOp.MAX, "avg": dist.ReduceOp.AVG}
    n = 1031  # not a multiple of anything the algorithms chunk by

    def data(r, dtype, count=n, small=False):
        # Small positive values: products of world ranks stay exact even in int8 and fp16.
        i = torch.arange(count, dtype=torch.int64)
        v = (i % 3 + (r % 2) + 1) if small else (i % 7 + 2 * r + 1)
        return v.to(dtype)

    def close(got, want, dtype):
        if dtype.is_floating_point:
            tol = 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6
            ok = torch.allclose(got.double(), want.double(), rtol=tol, atol=tol)
        else:
            ok = torch.equal(got, want)
        assert ok, f"got {got.flatten()[:6].tolist()} want {want.flatten()[:6].tolist()}"

    def reference(name, dtype, small):
        stack = torch.stack([data(r, dtype, small=small).double() for r in range(world)])
        if name == "sum":
            return stack.sum(0).to(dtype)
        if name == "product":
            return stack.prod(0).to(dtype)
        if name == "min":
            return stack.min(0).values.to(dtype)
        if name == "max":
            return stack.max(0).values.to(dtype)
        total = stack.sum(0)
        return (total / world if dtype.is_floating_point else torch.div(total, world, rounding_mode="floor")).to(dtype)

    def finish(work, asynchronous, outputs):
        """The async contract torch relies on: wait(), is_completed(), and a future of outputs."""
        if not asynchronous:
            assert work is None, "a blocking call returned a work"
            return
        fut = work.get_future()
        assert work.wait() is True
        assert work.is_completed()
        value = fut.wait()
        assert isinstance(value, list) and len(value) == len(outputs), f"future holds {value!r}"
        for v, o in zip(value, outputs):
            assert v.data_ptr() == o.data_ptr(), "future does not hold the output tensors"

    for dtype in dtypes:
        dn = str(dtype).replace("torch.", "")
        for mode in ("blocking", "async"):
            a = mode == "async"
            for opname, op in ops.items():
                def allreduce(opname=opname, op=op):
                    small = opname == "product"
                    t = data(rank, dtype, small=small)
                    finish(dist.all_reduce(t, op=op, async_op=a), a, [t])
                    close(t, reference(opname, dtype, small), dtype)
                run_check(f"all_reduce[{opname},{dn},{mode}]", allreduce, only)

            def broadcast():
                root = world - 1
                t = data(rank, dtype)
                finish(dist.broadcast(t, src=root, async_op=a), a, [t])
                close(t, data(root, dtype), dtype)
            run_check(f"broadcast[{dn},{mode}]", broadcast, only)

            def reduce():
                root = 1 % world
                t = data(rank, dtype)
                finish(dist.reduce(t, dst=root, async_op=a), a, [t])
                if rank == root:
                    close(t, reference("sum", dtype, False), dtype)
            run_check(f"reduce[{dn},{mode}]", reduce, only)

            def all_gather():
                outs = [torch.full((n,), 99, dtype=dtype) for _ in range(world)]
                finish(dist.all_gather(outs, data(rank, dtype), async_op=a), a, outs)
                for r in range(world):
                    close(outs[r], data(r, dtype), dtype)
            run_check(f"all_gather[{dn},{mode}]", all_gather, only)

            def all_gather_into_tensor():
                out = torch.empty(world * n, dtype=dtype)
                finish(dist.all_gather_into_tensor(out, data(rank, dtype), async_op=a), a, [out])
                close(out, torch.cat([data(r, dtype) for r in range(world)]), dtype)
            run_check(f"all_gather_into_tensor[{dn},{mode}]", all_gather_into_tensor, only)

            def chunks(r):  # rank r's input to reduce-scatter: world blocks of n
                return [data(r, dtype) + (k % 2) for k in range(world)]

            def reduce_scatter():
                out = torch.empty(n, dtype=dtype)
                finish(dist.reduce_scatter(out, chunks(rank), async_op=a), a, [out])
                want = sum(chunks(r)[rank].double() for r in range(world)).to(dtype)
                close(out, want, dtype)
            run_check(f"reduce_scatter[{dn},{mode}]", reduce_scatter, only)

            def reduce_scatter_tensor():
                out = torch.empty(n, dtype=dtype)
                finish(dist.reduce_scatter_tensor(out, torch.cat(chunks(rank)), async_op=a), a, [out])
                want = sum(chunks(r)[rank].double() for r in range(world)).to(dtype)
                close(out, want, dtype)
            run_check(f"reduce_scatter_tensor[{dn},{mode}]", reduce_scatter_tensor, only)

            def block(src, dst, rows):  # what src sends dst in all_to_all
                return (torch.arange(rows * 3, dtype=torch.int64) % 50 + src * 10 + dst).to(dtype).view(rows, 3)

            def all_to_all_single():
                rows = 4
                inp = torch.cat([block(rank, d, rows) for d in range(world)])
                out = torch.empty_like(inp)
                finish(dist.all_to_all_single(out, inp, async_op=a), a, [out])
                close(out, torch.cat([block(s, rank, rows) for s in range(world)]), dtype)
            run_check(f"all_to_all_single[{dn},{mode}]", all_to_all_single, only)

            def all_to_all_uneven():
                rows = lambda s, d: (s + 2 * d) % 3  # noqa: E731 (some blocks are empty)
                inp = torch.cat([block(rank, d, rows(rank, d)) for d in range(world)])
                out = torch.empty(sum(rows(s, rank) for s in range(world)), 3, dtype=dtype)
                finish(dist.all_to_all_single(out, inp, [rows(s, rank) for s in range(world)],
                                              [rows(rank, d) for d in range(world)], async_op=a), a, [out])
                close(out, torch.cat([block(s, rank, rows(s, rank)) for s in range(world)]), dtype)
            run_check(f"all_to_all_single_uneven[{dn},{mode}]", all_to_all_uneven, only)

            def all_to_all_list():
                rows = lambda s, d: 1 + (s + d) % 3  # noqa: E731
                outs = [torch.empty(rows(s, rank), 3, dtype=dtype) for s in range(world)]
                ins = [block(rank, d, rows(rank, d)) for d in range(world)]
                finish(dist.all_to_all(outs, ins, async_op=a), a, outs)
                for s_ in range(world):
                    close(outs[s_], block(s_, rank, rows(s_, rank)), dtype)
            run_check(f"all_to_all[{dn},{mode}]", all_to_all_list, only)

            def gather():
                root = world - 1
                outs = [torch.empty(n, dtype=dtype) for _ in range(world)] if rank == root else None
                work = dist.gather(data(rank, dtype), outs, dst=root, async_op=a)
                if a:
                    work.wait()
                if rank == root:
                    for r in range(world):
                        close(outs[r], data(r, dtype), dtype)
            run_check(f"gather[{dn},{mode}]", gather, only)

            def scatter():
                root = 0
                out = torch.empty(n, dtype=dtype)
                ins = [data(r, dtype) + 1 for r in range(world)] if rank == root else None
                finish(dist.scatter(out, ins, src=root, async_op=a), a, [out])
                close(out, data(rank, dtype) + 1, dtype)
            run_check(f"scatter[{dn},{mode}]", scatter, only)

            def send_recv():
                # Along a ring, even ranks sending first: a rank's ops run in order on its stream.
                right, left = (rank + 1) % world, (rank - 1) % world
                out, got = data(rank, dtype), torch.empty(n, dtype=dtype)
                steps = [lambda: (dist.isend if a else dist.send)(out, right),
                         lambda: (dist.irecv if a else dist.recv)(got, left)]
                if rank % 2:
                    steps.reverse()
                works = [s() for s in steps]
                if a:
                    for w in works:
                        w.wait()
                close(got, data(left, dtype), dtype)
            run_check(f"send_recv[{dn},{mode}]", send_recv, only)

    def large():
        # Past the pipelining chunk and the shared-memory single-copy threshold.
        for dtype in (torch.float32, torch.bfloat16):
            t = torch.full(((1 << 20) + 3,), float(rank + 1), dtype=dtype)
            dist.all_reduce(t)
            close(t, torch.full_like(t, world * (world + 1) / 2), dtype)
            out = torch.empty(world * t.numel(), dtype=dtype)
            dist.all_gather_into_tensor(out, t)
            close(out, torch.full_like(out, world * (world + 1) / 2), dtype)
    run_check("large_tensors", large, only)

    def many_in_flight():
        ts = [torch.full((5000 + i,), float(rank + i)) for i in range(24)]
        works = [dist.all_reduce(t, async_op=True) for t in ts]
        for i, w in reversed(list(enumerate(works))):
            w.wait()
            close(ts[i], torch.full_like(ts[i], sum(r + i for r in range(world))), torch.float32)
        assert all(w.is_completed() for w in works)
    run_check("many_async_in_flight", many_in_flight, only)

    def future_then():
        t = torch.full((100,), float(rank))
        fut = dist.all_reduce(t, async_op=True).get_future().then(lambda f: f.value()[0] * 2)
        close(fut.wait(), torch.full((100,), float(sum(range(world)) * 2)), torch.float32)
    run_check("future_then", future_then, only)

    def zero_size():
        t = torch.empty(0)
        dist.all_reduce(t)
        dist.broadcast(t, 0)
    run_check("zero_size", zero_size, only)

    def bool_broadcast():
        t = torch.tensor([rank == 0, True, rank != 0])
        dist.broadcast(t, 0)
        assert t.tolist() == [True, True, False]
    run_check("bool_broadcast", bool_broadcast, only)

    def barrier():
        for _ in range(3):
            dist.barrier()
        w = dist.barrier(async_op=True)
        w.wait()
        assert w.is_completed()
    run_check("barrier", barrier, only)

    def batch_ring():
        # batch_isend_irecv: one bccl group, so a large ring exchange cannot deadlock.
        right, left = (rank + 1) % world, (rank - 1) % world
        out = torch.full((1 << 19,), float(rank))
        got = torch.empty_like(out)
        reqs = dist.batch_isend_irecv([dist.P2POp(dist.isend, out, right), dist.P2POp(dist.irecv, got, left)])
        for r in reqs:
            r.wait()
        close(got, torch.full_like(got, float(left)), torch.float32)
    run_check("batch_isend_irecv_ring", batch_ring, only)

    def errors():
        def raises(fn, words):
            try:
                fn()
            except RuntimeError as e:
                msg = str(e)
                assert all(w in msg for w in words), f"message {msg!r} lacks {words}"
                return
            raise AssertionError(f"no RuntimeError ({words})")
        raises(lambda: dist.all_reduce(torch.ones(4, 4).t()), ["bccl", "contiguous"])
        raises(lambda: dist.all_reduce(torch.ones(4, dtype=torch.int16)), ["bccl", "dtype"])
        raises(lambda: dist.all_reduce(torch.ones(4, dtype=torch.bool)), ["bccl", "dtype"])
        raises(lambda: dist.all_reduce(torch.ones(4, dtype=torch.int32), op=dist.ReduceOp.BAND),
               ["bccl", "not supported"])
        raises(lambda: dist.all_to_all_single(torch.empty(world + 1), torch.ones(world + 1)),
               ["bccl", "divide"])
        raises(lambda: dist.all_gather_into_tensor(torch.empty(3), torch.ones(2)), ["bccl"])
        dist.all_reduce(torch.ones(2))  # the group still works after refused calls
    run_check("clear_errors", errors, only)

    def two_groups():
        # All ranks create every group (torch requires it); members use them concurrently.
        pair = dist.new_group([0, 1], backend="bccl")
        everyone = dist.new_group(list(range(world)), backend="bccl")
        tail = dist.new_group(list(range(1, world)), backend="bccl")
        works, checks = [], []
        for i in range(4):
            if rank in (0, 1):
                t = torch.full((20000,), float(rank + i))
                works.append(dist.all_reduce(t, group=pair, async_op=True))
                checks.append((t, float(1 + 2 * i)))
            t = torch.full((30000,), float(rank * i))
            works.append(dist.all_reduce(t, group=everyone, async_op=True))
            checks.append((t, float(i * sum(range(world)))))
            t = torch.full((1000,), 1.0)
            works.append(dist.all_reduce(t, async_op=True))  # the default group too
            checks.append((t, float(world)))
        if rank >= 1:
            t = torch.full((10,), float(rank))
            dist.broadcast(t, src=world - 1, group=tail)  # global rank as src; group rank differs
            checks.append((t, float(world - 1)))
        for w in works:
            w.wait()
        for t, want in checks:
            close(t, torch.full_like(t, want), torch.float32)
        assert dist.get_backend(pair if rank < 2 else everyone) == "bccl"
    run_check("two_groups_at_once", two_groups, only)

    def ddp():
        # DDP needs broadcast (parameter sync), allreduce and Work futures (gradient buckets).
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
        ref = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
        ref.load_state_dict(model.state_dict())
        net = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.005)
        x = torch.randn(8, 32) + rank
        net(x).pow(2).mean().backward()
        ref(x).pow(2).mean().backward()
        for p, q in zip(net.parameters(), ref.parameters()):
            g = q.grad.clone()
            dist.all_reduce(g)
            close(p.grad, g / world, torch.float32)
    run_check("ddp_gradients", ddp, only)


def worker_kill(only):
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    victim = world - 1
    t = torch.ones(1 << 16)
    dist.all_reduce(t)
    dist.barrier()
    if rank == victim:
        time.sleep(0.5)  # the others are waiting in an allreduce by now
        os.kill(os.getpid(), signal.SIGKILL)

    def pending_work_raises():
        start = time.time()
        big = torch.ones(1 << 20)
        try:
            if rank % 2 == 0:
                dist.all_reduce(big, async_op=True).wait()  # async, then wait
            else:
                dist.all_reduce(big)  # blocking
        except RuntimeError as e:
            took = time.time() - start
            assert took < PG_TIMEOUT_S / 2, f"took {took:.1f} s: a timeout, not failure detection"
            assert str(victim) in str(e), f"message does not name rank {victim}: {e}"
            print(f"rank {rank}: raised after {took:.2f} s: {e}", flush=True)
            return
        raise AssertionError("the allreduce completed although a rank was killed")

    def later_ops_raise():
        start = time.time()
        try:
            dist.all_reduce(torch.ones(8))
        except RuntimeError:
            assert time.time() - start < 10
            return
        raise AssertionError("an op after the failure succeeded")

    run_check("killed_rank_raises_on_survivors", pending_work_raises, only)
    run_check("ops_after_failure_raise", later_ops_raise, only)


def worker_main(scenario, only):
    import torch.distributed as dist

    import bccl_torch  # noqa: F401  (registers "bccl")
    import bccl_torch as again  # noqa: F401  (a second import must not re-register)

    dist.init_process_group("bccl", timeout=datetime.timedelta(seconds=PG_TIMEOUT_S))
    {"collectives": worker_collectives, "kill": worker_kill}[scenario](only)
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 (after a rank died this may complain; exit anyway)
        pass


# ---------------------------------------------------------------------------------------------
# Parent side: start ranks, bound them, tally.
# ---------------------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_scenario(scenario, world, timeout, expect_killed, args):
    port = free_port()
    logs, procs = [], []
    with tempfile.TemporaryDirectory(prefix="bccl-torch-test-") as tmp:
        for rank in range(world):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                       OPENBLAS_NUM_THREADS="1")
            log = open(os.path.join(tmp, f"rank{rank}.log"), "w+")
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", scenario]
            if args.k:
                cmd += ["-k", args.k]
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
            logs.append(log)
        deadline = time.time() + timeout
        timed_out = False
        for p in procs:
            try:
                p.wait(timeout=max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        results = {}  # name -> list of (rank, ok, detail)
        outputs = []
        for rank, log in enumerate(logs):
            log.seek(0)
            text = log.read()
            log.close()
            outputs.append(text)
            for line in text.splitlines():
                parts = line.split("\t")
                if len(parts) == 4 and parts[0] == "CHECK":
                    results.setdefault(parts[1], []).append((rank, parts[2] == "PASS", parts[3]))
    passed = failed = 0
    for name, per_rank in results.items():
        ran = {r for r, _, _ in per_rank}
        expected = {r for r in range(world) if r not in expect_killed}
        bad = [(r, d) for r, ok, d in per_rank if not ok]
        missing = expected - ran
        if bad or missing:
            failed += 1
            print(f"FAIL {scenario}/{name}: " + "; ".join(
                [f"rank {r}: {d}" for r, d in bad] + [f"rank {r}: never reported" for r in sorted(missing)]))
        else:
            passed += 1
            if args.verbose:
                print(f"ok   {scenario}/{name}")
    # The processes themselves: everyone exits 0 in time, and the victim by SIGKILL.
    codes = [p.returncode for p in procs]
    want = [-signal.SIGKILL if r in expect_killed else 0 for r in range(world)]
    if timed_out or codes != want or (not results and not args.k):
        failed += 1
        why = "timed out" if timed_out else f"exit codes {codes}, expected {want}"
        print(f"FAIL {scenario}/processes: {why}")
        for rank, text in enumerate(outputs):
            tail = "\n".join(text.splitlines()[-25:])
            print(f"---- rank {rank} output (tail) ----\n{tail}")
    else:
        passed += 1
    if args.verbose:
        for rank, text in enumerate(outputs):
            for line in text.splitlines():
                if not line.startswith("CHECK"):
                    print(f"[{scenario} rank {rank}] {line}")
    return passed, failed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("-k", help="run only checks whose name contains this")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--world", type=int, default=3, help="ranks of the collectives scenario (default 3)")
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.k)
        return 0
    try:
        import bccl_torch  # noqa: F401  (fail once, clearly, rather than in every rank)
    except ImportError as e:
        print(f"FAIL import bccl_torch: {e} (set PYTHONPATH to a build's python/ directory)")
        print("0 passed, 1 failed")
        return 1
    start = time.time()
    passed = failed = 0
    scenarios = [("collectives", args.world, 420, set()), ("kill", 3, 120, {2})]
    for scenario, world, timeout, killed in scenarios:
        t0 = time.time()
        p, f = run_scenario(scenario, world, timeout, killed, args)
        print(f"{scenario} ({world} ranks): {p} passed, {f} failed in {time.time() - t0:.1f} s")
        passed += p
        failed += f
    print(f"total time {time.time() - start:.1f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
