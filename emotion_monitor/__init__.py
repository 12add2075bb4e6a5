"""emotion-monitor: the single command-line entry point and the local runtime shared by all components."""

__version__ = "0.1.0"
