"""Where the shared reference data lives: `../shared/testdata` beside the repository (a CI
clone has it there too), or HUB_SHARED_TESTDATA."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("HUB_SHARED_TESTDATA", REPO.parent / "shared" / "testdata"))
UKCORE_EXAMPLES = TESTDATA / "ukcore" / "examples"
HL7V2_CORPUS = TESTDATA / "hl7v2-fhir-converter-adt"
