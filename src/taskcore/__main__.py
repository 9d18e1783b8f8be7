import sys

from taskcore.cli import main

if __name__ == "__main__":  # the process pool's children import this module as __mp_main__
    sys.exit(main())
