"""Test-session isolation from the user's own nlsq configuration and disk cache."""

import os
import tempfile

# Set before any fit: nlsq reads these lazily, on the first fit of the process.
os.environ["NLSQ_CONFIG"] = os.path.join(tempfile.mkdtemp(prefix="nlsq-test-config-"), "none.json")
os.environ.setdefault("NLSQ_DISK_CACHE_DIR", tempfile.mkdtemp(prefix="nlsq-test-disk-cache-"))
