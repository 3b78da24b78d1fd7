"""`python -m graddoctor` is the `graddoctor` command."""

import sys

from .cli._main import main

sys.exit(main())
