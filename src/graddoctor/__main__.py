"""`python -m graddoctor` is the `graddoctor` command."""

import sys

from .cli import main

sys.exit(main())
