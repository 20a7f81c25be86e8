"""tools/sweep: grids of `blockwise train` on Dask distributed (see cli.py and the README's "Sweeps")."""
