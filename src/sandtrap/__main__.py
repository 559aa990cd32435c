"""`python -m sandtrap`: the same as the `sandtrap` console script."""

from sandtrap.cli import main

main()
