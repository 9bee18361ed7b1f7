"""`python -m ludl <job> …` is the same as `ludl <job> …`."""

from __future__ import annotations

from ludl.cli import main

if __name__ == "__main__":
    main()
