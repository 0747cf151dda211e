"""`python -m sync_gateway` runs the same CLI as the `sync-gateway` script."""

from sync_gateway.cli import main

raise SystemExit(main())
