"""Public entry points with scipy's signatures."""
