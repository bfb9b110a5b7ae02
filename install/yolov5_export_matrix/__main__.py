"""`python -m yolov5_export_matrix`: the installed command line without its script."""

import sys

from yolov5_export_matrix import main

sys.exit(main())
