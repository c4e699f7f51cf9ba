"""Figures, tables and the reproduction report (reads only result tables)."""
