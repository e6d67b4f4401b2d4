"""widthwise's search: latency tables and objectives in, width configurations out.

Imports nothing else of widthwise: it reads a table file and an objective and answers.
"""
