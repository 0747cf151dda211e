"""Sleeps N seconds (first argument, default 5), then prints {"slept": N}."""

import json
import sys
import time


def main() -> None:
    try:
        seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    except ValueError:
        seconds = 5.0
    time.sleep(max(0.0, seconds))
    slept = int(seconds) if seconds.is_integer() else seconds
    print(json.dumps({"slept": slept}, separators=(",", ":")))


if __name__ == "__main__":
    main()
