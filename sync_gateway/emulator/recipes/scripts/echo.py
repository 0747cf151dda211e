"""Prints its first argument as it came: task output the caller chooses (a response object
with any statusCode or headers), for the tests of what task output may and may not set."""

import sys

print(sys.argv[1] if len(sys.argv) > 1 else "")
