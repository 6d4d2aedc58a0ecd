"""`gelu_new` at inference: realm_hf's `RealmGELUTanh` (the sigmoid identity, float32 CPU, no autograd) vs PyTorch's
fused tanh-GELU kernel (transformers' `GELUTanh`), side by side in one process, on reader-activation shapes.

For each shape: best-of-`--repeats` milliseconds of each, their ratio, and the largest absolute difference.

Usage:

    python benchmarks/bench_gelu.py --threads 1 --output benchmarks/results/bench_gelu.json
"""

from __future__ import annotations

import argparse

import torch
from _common import best_of, command_line, machine_info, set_threads, write_results
from transformers.activations import GELUTanh


SHAPES = [(5, 100, 256), (16, 200, 256), (16, 200, 1536), (5, 300, 1536), (16, 300, 3072)]


def best_ms(fn, x: torch.Tensor, repeats: int) -> float:
    return best_of(lambda: fn(x), repeats, warmup=1)[1] * 1e3


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=str, default=None)
    args = parser.parse_args(argv)
    from realm_hf.ops import RealmGELUTanh

    threads = set_threads(args.threads)
    fused, realm = GELUTanh(), RealmGELUTanh()
    rows = []
    with torch.no_grad():
        for shape in SHAPES:
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
            fused_ms, realm_ms = best_ms(fused, x, args.repeats), best_ms(realm, x, args.repeats)
            rows.append(
                {
                    "shape": list(shape),
                    "fused_ms": fused_ms,
                    "realm_ms": realm_ms,
                    "realm_over_fused": realm_ms / fused_ms,
                    "max_abs_diff": float((fused(x) - realm(x)).abs().max()),
                }
            )
            print(
                f"{shape}: fused {fused_ms:.2f} ms, RealmGELUTanh {realm_ms:.2f} ms ({realm_ms / fused_ms:.2f}x time)"
            )
    results = {"command": command_line(), "machine": machine_info(), "threads": threads, "results": rows}
    return write_results(args.output, results)


if __name__ == "__main__":
    main()
