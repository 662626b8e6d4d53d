"""`python3 -m deploy` (what `make deploy` runs): see deploy/deploy.py."""

import sys

from deploy.deploy import main

sys.exit(main())
