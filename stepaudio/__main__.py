"""``python -m stepaudio ...``: the same as the ``stepaudio`` console command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
