"""`python -m stylegan.dataset_tool`: the releases' command name for the dataset tool, whose code
lives in `stylegan.data.tool`."""
import sys

from stylegan.data.tool import main

if __name__ == '__main__':
    sys.exit(main())
