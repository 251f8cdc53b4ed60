"""Run: one call (or one chunk of calls) into a compiled program per fit."""
