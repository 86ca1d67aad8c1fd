"""`python -m embedder.cli`: the `embedder` command."""

import sys

from embedder.cli.main import main

sys.exit(main())
