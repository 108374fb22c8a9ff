"""`python -m prunejob_operator` = `prunejob operator`."""

import sys

from prunejob_operator.cli import main

sys.exit(main())
