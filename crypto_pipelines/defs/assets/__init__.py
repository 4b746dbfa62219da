"""Asset factories, one module per kind of data."""
