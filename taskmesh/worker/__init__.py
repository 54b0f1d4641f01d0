"""taskmesh worker tier."""
