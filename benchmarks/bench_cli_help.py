"""How long `realm-hf --help` and the other quick commands take, as a user runs them (a fresh process each time),
beside `python -c "import realm_hf"`: what every `realm-hf` command paid before the command line loaded the library
lazily (the import registers with the Auto classes, which loads torch and transformers' models).

For each command line: the median and the fastest of `--repeats` runs, in seconds, and the ratio of the median to the
package import's. Run it on an idle machine (nothing else timed at once).

Usage:

    python benchmarks/bench_cli_help.py --output benchmarks/results/bench_cli_help.json
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys

from _common import Stopwatch, command_line, machine_info, write_results


COMMANDS = [
    ["--help"],
    ["--version"],
    ["ask", "--help"],
    ["index", "--help"],
    ["convert", "--help"],
    ["pretrain", "--help"],
    ["finetune", "--help"],
]


def timed(argv: list[str], repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        with Stopwatch() as clock:
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        seconds.append(clock.seconds)
    return {"median_s": statistics.median(seconds), "best_s": min(seconds), "runs_s": seconds}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="Fresh processes per command line.")
    parser.add_argument("--output", default=None, help="Where to write the JSON (default: print only).")
    args = parser.parse_args(argv)
    script = shutil.which("realm-hf")
    if script is None:
        parser.error("the realm-hf console script is not on PATH (pip install -e . first).")
    baseline = timed([sys.executable, "-c", "import realm_hf"], args.repeats)
    results = {}
    for command in COMMANDS:
        measured = timed([script, *command], args.repeats)
        measured["ratio_to_package_import"] = measured["median_s"] / baseline["median_s"]
        results["realm-hf " + " ".join(command)] = measured
        print(
            f"realm-hf {' '.join(command):<20} {measured['median_s']:.2f} s (x{measured['ratio_to_package_import']:.2f})"
        )
    print(f"{'import realm_hf':<29} {baseline['median_s']:.2f} s")
    report = {
        "machine": machine_info(),
        "command": command_line(),
        "repeats": args.repeats,
        "import_realm_hf": baseline,
        "commands": results,
    }
    return write_results(args.output, report)


if __name__ == "__main__":
    main()
