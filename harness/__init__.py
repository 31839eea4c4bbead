"""Research harness for parameter-efficient fine-tuning of LLMs."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes logs a warning at import about optional CPU kernels fetched from the hub;
# they are never available offline and the fallback is correct, so it is only noise.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
