"""atheris harness for the rtdose reader: `python fuzz/fuzz_rtdose.py [libFuzzer options] [CORPUS …]`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in the checkout

from fuzz.harness import main

if __name__ == "__main__":
    main([sys.argv[0], "rtdose", *sys.argv[1:]])
