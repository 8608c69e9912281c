"""Find the latent W of a real image: `python projector.py --network=FILE --target=img.png --outdir=out`.
See `stylegan/projector.py` for the algorithm and options; `--help` lists them."""
import sys

from stylegan.projector import main

if __name__ == '__main__':
    sys.exit(main())
