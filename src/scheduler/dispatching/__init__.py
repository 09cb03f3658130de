"""Sub-agent dispatch (features.md §15.1): the operations behind ``openclaw-scheduler dispatch``.

``spec`` holds the pure rules (labels, the task preamble, the two jobs, ``done``'s guards, the
auto-resolve rules), ``inputs`` reads a prompt from its source, ``service`` performs the
operations against the store and the gateway. The CLI (cli/dispatch.py) only parses arguments.
"""
