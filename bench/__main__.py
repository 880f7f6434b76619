"""Run every benchmark module in turn and print its figures."""

from __future__ import annotations

import importlib
import sys

MODULES = ["bench.rules", "bench.pipeline", "bench.loop", "bench.tools"]


def main() -> None:
    names = [f"bench.{n}" for n in sys.argv[1:]] or MODULES
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        importlib.import_module(name).main([])


if __name__ == "__main__":
    main()
