"""widthwise's device agent: times networks of variable width on a board.

Runs where only python3, numpy and one inference runtime are installed, so it imports
nothing from the host packages (profiler, search) nor scipy or click.
"""

__version__ = "0.1.0"
