"""TheEye's "Rest API Response" example task: argument 100 succeeds, anything else fails (418)."""

import json
import sys
from datetime import UTC, datetime


def main() -> int:
    arg = sys.argv[1] if len(sys.argv) > 1 else "100"
    if arg == "100":
        now = datetime.now(UTC)
        date = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        print(json.dumps({"name": "tomer", "date": date}, separators=(",", ":")))
        return 0
    error = {
        "message": "Validation Error. Invalid Argument Value",
        "statusCode": 418,
        "name": "ClientError",
        "code": "",
        "status": 418,
    }
    print(json.dumps(error, separators=(",", ":")))
    return 1


if __name__ == "__main__":
    sys.exit(main())
