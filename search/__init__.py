"""widthwise's search: latency tables and objectives in, width configurations out.

Of the rest of widthwise it imports only the error base (`widthwise.errors`) and, from the
bottom layer, the token rules, the statistic names and a text clipper (`device_agents.auth`,
`.statistics`, `.errors`):
it reads a table file and an objective and answers.
"""
