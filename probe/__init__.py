"""bynet-probe: measure whether, and exactly how, websites are blocked from your network.

Measuring (this package) and judging (``analysis``) are separate: the probe stores what
it saw, never only a conclusion.
"""

__version__ = "0.1.0"
