"""The read-only real inputs shared by every checkout: ``../shared`` next to the
repository, or the folder ``POLYPYTHIAS_SHARED`` names."""

import os
from pathlib import Path

SHARED = Path(os.environ.get("POLYPYTHIAS_SHARED") or Path(__file__).resolve().parents[2] / "shared")
#: Real lm-eval result files of the Pythia suite (never edited).
PYTHIA_EVALS = SHARED / "fixtures" / "pythia-evals"
