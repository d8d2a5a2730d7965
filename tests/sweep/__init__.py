"""Tests of onlytorch sweep (onlytorch/sweep/)."""
