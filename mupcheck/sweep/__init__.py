"""Sweeps: scheduling a grid's runs onto processes and devices, and reporting their progress.

`run_grid` (in `mupcheck.sweep.local`) trains what the store lacks on this machine.
"""
