"""widthwise's host side: talks to agents, stores samples, fits latency tables, the CLI."""

__version__ = "0.1.0"
