"""`python -m prunejob`: the same dispatcher as the `prunejob` console script."""

import sys

from prunejob.cli import main

sys.exit(main())
