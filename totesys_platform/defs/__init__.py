"""All the Dagster code of the platform, one folder per stage; `totesys_platform.definitions` collects it.

Everything outside this package is plain Python: importing it loads no Dagster (a test holds it to that; the
run-once commands talk to the webserver through dagster-graphql's client, and `make run` calls `instance.py`
once at start). The stages' logic is tested on its own; these modules only wire it to assets, checks, jobs,
sensors and resources.
"""
