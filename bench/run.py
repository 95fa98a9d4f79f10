"""Run every benchmark module (``bench/bench_*.py``), or those named, writing to build/bench/.

Each module exposes ``main(results_dir: Path) -> dict`` and writes its own JSON file there.
Speed targets live here, never in the test suite's asserts.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from local_stack.paths import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "build" / "bench"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmark names, e.g. cdc bronze dbt (default: all)")
    arguments = parser.parse_args()
    modules = sorted(path.stem for path in (PROJECT_ROOT / "bench").glob("bench_*.py"))
    selected = [name for name in modules if not arguments.names or name.removeprefix("bench_") in arguments.names]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name in selected:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            result = importlib.import_module(f"bench.{name}").main(RESULTS_DIR)
        except Exception as error:  # one broken benchmark must not hide the others' results
            failures += 1
            print(f"!! {name} failed: {error!r}", file=sys.stderr, flush=True)
            continue
        print(json.dumps(result, indent=2, default=str), flush=True)
        print(f"== {name} done in {time.monotonic() - started:.0f}s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
