"""The SQLite layer: the only package in the project that speaks SQL."""
