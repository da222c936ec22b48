"""ssseg: semi-supervised semantic segmentation, a training core with strategy plugins.

``ssseg.__version__`` is the installed distribution's version (``ssseg --version`` prints it).
"""

from importlib import metadata

try:
    __version__ = metadata.version("ssseg")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
