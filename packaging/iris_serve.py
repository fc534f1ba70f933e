"""Entry point of the bundle's `iris-serve` command: the local OpenAI-compatible server.

PyInstaller runs an entry script as a plain `__main__`, so `engine/serve/__main__.py` (which uses
relative imports) cannot be the script itself.
"""

import sys

from engine.serve.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
