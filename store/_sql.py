"""Placeholder replaced by the SQL engine in this same change."""
