"""The daemon: lifecycle, scheduling loop, dispatch and finalize."""
