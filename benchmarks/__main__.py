"""Run every benchmark module ``benchmarks/bench_*.py`` (or those named on the command line) and print its table.

``python -m benchmarks [NAME ...]``, e.g. ``python -m benchmarks emulator controllers``. A benchmark whose optional
backend is missing (Lava on Python 3.11+) says so and is skipped.
"""
import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if m.name.startswith("bench_"))
    want = (argv if argv is not None else sys.argv[1:]) or names
    unknown = [w for w in want if w not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    for name in want:
        print(f"\n=== {name} " + "=" * (70 - len(name)), flush=True)
        t0 = time.perf_counter()
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        mod.main()
        print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
