"""Fault injection against a throwaway PostgreSQL cluster: stopped, frozen, locked, full."""
