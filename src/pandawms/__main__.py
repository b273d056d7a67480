"""``python -m pandawms`` is the ``pandawms`` command."""

import sys

from pandawms.cli import main

sys.exit(main())
