"""The SQLite implementation of the store: the only code that speaks SQLite's SQL."""
