"""`python -m polypythias …` (and `accelerate launch -m polypythias …`)."""

from polypythias.cli import main

main()
