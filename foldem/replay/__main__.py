"""`python -m foldem.replay serve --traces FILE...`"""

import sys

from foldem.replay.cli import main

sys.exit(main())
