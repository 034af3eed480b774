"""All the Dagster code of the platform, one folder per stage; `totesys_platform.definitions` collects it.

Everything outside this package is plain Python and imports no Dagster (a test holds it to that): the stages'
logic is tested on its own, and these modules only wire it to assets, checks, jobs, sensors and resources.
"""
