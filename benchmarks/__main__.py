"""Run every benchmark module ``benchmarks/bench_*.py`` (or those named on the command line) and print its table.

``python -m benchmarks [NAME ...] [--OPTION ...]``, e.g. ``python -m benchmarks emulator controllers`` or
``python -m benchmarks emulator --reference``. Options go to every named benchmark whose ``main`` takes them. A
benchmark whose optional backend is missing (Lava on Python 3.11+) says so and is skipped.
"""
import importlib
import inspect
import pkgutil
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if m.name.startswith("bench_"))
    args = argv if argv is not None else sys.argv[1:]
    if "-h" in args or "--help" in args:  # say what there is; a benchmark run takes minutes
        print(__doc__.strip() + "\n\nbenchmarks: " + ", ".join(names))
        return 0
    options = [a for a in args if a.startswith("--")]
    want = [a for a in args if not a.startswith("--")] or names
    unknown = [w for w in want if w not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    for name in want:
        print(f"\n=== {name} " + "=" * (70 - len(name)), flush=True)
        t0 = time.perf_counter()
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        if inspect.signature(mod.main).parameters:
            mod.main(options)
        elif options:
            print(f"({name} takes no options; ignored {' '.join(options)})")
            mod.main()
        else:
            mod.main()
        print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
