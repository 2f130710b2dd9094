"""``python -m export.predict`` in a checkout: the predictor command of the TensorFlow-free runtime
(`keras_effattn_runtime.predict`; installed alone, ``pip install export/runtime``, it is
``effattn-predict``). Same flags, same exit status."""

import sys

from keras_effattn_runtime.predict import main

if __name__ == "__main__":
    sys.exit(main())
