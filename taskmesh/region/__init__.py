"""taskmesh region tier."""
