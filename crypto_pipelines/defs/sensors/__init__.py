"""Dagster sensors, one module per concern; registered through functions in defs/build.py."""
