"""The grid files shipped with srfp, importable as ``srfp.grids`` (see pyproject.toml)."""
