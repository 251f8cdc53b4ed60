"""Finish: one status table, one covariance rule, one result assembly."""
