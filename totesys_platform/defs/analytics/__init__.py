"""The sales report asset."""
