"""Research harness for parameter-efficient fine-tuning of LLMs."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes logs a warning at import about optional CPU kernels fetched from the hub;
# they are never available offline and the fallback is correct, so it is only noise.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
# kernels >= 0.19 (transformers' dependency, which bitsandbytes asks for those CPU kernels) adds
# a warning that offline mode skips its publisher check: the same noise, one line earlier.
_logging.getLogger("kernels._internals.hf_hub").setLevel(_logging.ERROR)
