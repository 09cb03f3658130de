"""Sub-agent dispatch (features.md §15.1): the operations behind ``openclaw-scheduler dispatch``.

``spec`` holds the pure rules (labels, the task preamble, the two jobs, ``done``'s guards, the
auto-resolve rule) and ``inputs`` reads a prompt from its source. The operations, each
validating before it writes: ``enqueue``; ``inspection`` (status, result, list, heartbeat,
stuck, sync); ``done``; ``control`` (send/steer, cancel); ``importing`` (labels.json). What they
share (the entry's JSON shape, lookups, disarming the jobs) is in ``ledger``, and ``gateway``
opens the control connection. The CLI (cli/dispatch.py) only parses arguments.
"""
