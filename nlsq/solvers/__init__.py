"""Compiled nonlinear least-squares solvers."""
