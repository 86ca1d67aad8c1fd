"""`python -m embedder.bench [--quick] ...`"""

import sys

from embedder.bench import main

sys.exit(main(sys.argv[1:]))
