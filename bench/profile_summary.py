"""Summarise a py-spy profile: where a process's CPU goes, by function and by package.

``python bench/profile_summary.py PROFILE.txt [--top N]`` reads py-spy's raw output (``py-spy
record -f raw --nolineno``: one ``frame;frame;…;leaf COUNT`` line per distinct stack, each frame
``function (file)``) and prints, as percentages of all the samples:

* self: the samples whose innermost frame is the function (time spent in its own code, and in
  C code it called that py-spy does not see: a C extension, the event loop's own I/O);
* cumulative: the samples with the function anywhere on the stack (counted once per stack);
* by package, self and cumulative: the same grouped by the first part of the frame's file
  (``aiohttp``, ``structlog``, ``prometheus_client``; each of the project's own files apart,
  ``sync_gateway/logging.py`` …): e.g. all that logging costs is the cumulative ``structlog``.

The file paths are as py-spy prints them (relative to the import path).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def read(path: Path) -> list[tuple[list[str], int]]:
    """(frames outermost first, samples) for each line of a py-spy raw profile."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def package(frame: str) -> str:
    """``aiohttp`` for ``f (aiohttp/web.py)``; the module itself for the project's files."""
    file = frame.rpartition(" (")[2].rstrip(")")
    parts = file.split("/")
    if parts[0] == "sync_gateway":
        return file
    if parts[0].startswith("<frozen"):
        return parts[0]
    return parts[0].removesuffix(".py")


def summarise(stacks: list[tuple[list[str], int]], top: int) -> str:
    total = sum(count for _, count in stacks) or 1
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    packages_anywhere: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
        packages[package(frames[-1])] += count
        for frame in set(frames):
            anywhere[frame] += count
        for name in {package(frame) for frame in frames}:
            packages_anywhere[name] += count

    def table(title: str, counter: Counter[str], n: int) -> list[str]:
        lines = [f"{title}", f"{'%':>6}  {'samples':>7}  function (file)"]
        for name, count in counter.most_common(n):
            lines.append(f"{100 * count / total:6.1f}  {count:7d}  {name}")
        return [*lines, ""]

    out = [f"{total} samples", ""]
    out += table("self (innermost frame)", own, top)
    out += table("cumulative (anywhere on the stack)", anywhere, top)
    out += table("self by package", packages, top)
    out += table("cumulative by package", packages_anywhere, top)
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", type=Path, help="py-spy record -f raw --nolineno output")
    p.add_argument("--top", type=int, default=30, help="rows per table")
    args = p.parse_args()
    sys.stdout.write(summarise(read(args.profile), args.top) + "\n")


if __name__ == "__main__":
    main()
