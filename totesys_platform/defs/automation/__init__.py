"""Jobs, schedules, sensors, asset checks, lake maintenance, alerts and run logging."""
