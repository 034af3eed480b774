"""The processed zone: one asset per star-schema table."""
