"""The repkernel command-line interface (installed as the ``repkernel_cli`` package)."""
