"""The PostgreSQL backend: several daemons, on several hosts, sharing one database."""
