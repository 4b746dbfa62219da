"""Dagster asset checks, one module per concern; registered through functions in defs/build.py."""
