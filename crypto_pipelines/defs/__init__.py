"""The Dagster layer: assets, checks, sensors, schedules, jobs and resources over the cores."""
