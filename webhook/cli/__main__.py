"""`python -m webhook.cli`: the same as the `karta-admission` console script."""

import sys

from webhook.cli.main import main

sys.exit(main())
