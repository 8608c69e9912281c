"""Generate images from a trained network: `python generate.py --network=FILE --seeds=0-3 --outdir=out`.
See `stylegan/generate.py` for the options; `--help` lists them."""
import sys

from stylegan.generate import main

if __name__ == '__main__':
    sys.exit(main())
