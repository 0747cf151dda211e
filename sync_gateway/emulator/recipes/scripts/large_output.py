"""Prints one JSON object of about N bytes (first argument, default 1_000_000)."""

import json
import sys


def main() -> None:
    try:
        size = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    except ValueError:
        size = 1_000_000
    overhead = len(json.dumps({"size": size, "data": ""}, separators=(",", ":")))
    data = "x" * max(0, size - overhead)
    print(json.dumps({"size": size, "data": data}, separators=(",", ":")))


if __name__ == "__main__":
    main()
