"""taskmesh master tier."""
