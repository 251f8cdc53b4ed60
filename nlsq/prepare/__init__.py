"""Prepare: arguments to validated problem data, in scipy's order with its messages."""
