"""The experiment scripts, run as ``python -m experiments.<script>`` (see each one's docstring).

Importing this package runs before any script imports TensorFlow, so TensorFlow's C++ start-up
log lines are hidden here unless the command line has ``--verbose`` (`keras_effattn_runtime.cli`).
"""

from keras_effattn_runtime import cli as _cli

_cli.quiet_tensorflow()
