"""The ingestion zone: the extraction asset (one output per source table) and its versions_move_forward check."""
