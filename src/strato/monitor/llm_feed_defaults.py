"""The published Splitwise cluster's defaults, in a module light enough for ``strato --help`` to import.

Two prompt and two token DGX-H100 at 7 req/s of coding traffic: small enough that the mixed pool borrows
token machines several times a simulated minute, so role groups visibly move (docs/monitor.md).
"""

DEFAULT_DESIGN = "splitwise-hh"
DEFAULT_PROMPT = 2
DEFAULT_TOKEN = 2
DEFAULT_MODEL = "llama2-70b"
DEFAULT_TRACE = "synthetic:kind=code"
DEFAULT_RATE_RPS = 7.0
DEFAULT_ARRIVALS_S = 600.0
DEFAULT_IP_PREFIX = "10.77"
