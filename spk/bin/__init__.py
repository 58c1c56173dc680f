"""Thin click commands; each module parses options and calls the library."""
