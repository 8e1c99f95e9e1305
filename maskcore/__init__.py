"""maskcore: the pure kernel of maskjob.

Annotation bytes in, numpy masks out, file bytes out. Nothing in this package imports dask or
fsspec or touches storage (a test enforces it); `jobs/` does the orchestration and I/O.
"""

import os

__version__ = "0.1.0"

# A backstop under the header checks of limits.py: OpenCV refuses to decode more pixels than
# this (read once, when cv2 is first imported; 2**28 px = 805 MB as BGR).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 28))
