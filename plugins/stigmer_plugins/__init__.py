"""First-party kind plugins.

Each module is registered under the ``stigmer.kinds`` entry-point group in
pyproject.toml, exactly as a third-party package registers its own.
"""

import logging

# As stigmer_core's: the application's logging configuration decides where these records go (the
# daemon's and the command line's write them), never logging's last resort on its stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())
