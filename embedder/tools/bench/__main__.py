"""`python -m embedder.tools.bench [--quick] ...`"""

import sys

from embedder.tools.bench import main

sys.exit(main(sys.argv[1:]))
