"""`python -m calmix.config FILE...`: check a study's config before running it."""

from calmix.config import main

raise SystemExit(main())
