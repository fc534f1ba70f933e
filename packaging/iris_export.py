"""Entry point of the bundle's `iris-export` command: the exporter's CLI, frozen beside the app.

PyInstaller runs an entry script as a plain `__main__`, so `exporter/__main__.py` (which uses
relative imports) cannot be the script itself.
"""

import sys

from exporter.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
