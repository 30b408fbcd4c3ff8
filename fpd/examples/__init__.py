"""Standard-socket programs that move to fpd with one import line (``--fpd``).

Each is a script (``python -m fpd.examples.echo_server``, or run the file): ``fpd demo``
runs them on fpd and on the kernel's TCP side by side; docs/DEMO.md describes them.
"""
