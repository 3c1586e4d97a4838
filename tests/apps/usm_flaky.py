"""An app that exits with code 3 after a random delay (USM_FLAKY_MAX seconds)."""

import os
import random
import time

time.sleep(random.uniform(0, float(os.environ.get("USM_FLAKY_MAX", "0.3"))))
os._exit(3)
