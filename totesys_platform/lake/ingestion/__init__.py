"""The lake's ingestion zone: exactly-once incremental extraction of the totesys tables."""
