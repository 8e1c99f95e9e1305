"""Write scikit-image's bundled sample photos as lossless PNGs into a folder.

Run with a Python that has scikit-image installed (run_supervisely_oracle.sh uses a throwaway
venv for it; scikit-image is never a dependency of the oracle or of maskjob). Only photos
that scikit-image documents as public domain / CC0 are taken:

- astronaut: NASA, public domain;   - coffee: Rachel Michetti, CC0;
- chelsea: Stefan van der Walt, CC0; - rocket: SpaceX, public domain;
- hubble_deep_field: NASA/ESA, public domain.

Usage: python dump_skimage_photos.py OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

NAMES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        arr = np.asarray(getattr(skimage.data, name)())
        Image.fromarray(arr).save(out / f"{name}.png")
        print(name, arr.shape)


if __name__ == "__main__":
    main()
