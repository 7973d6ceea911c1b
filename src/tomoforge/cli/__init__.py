"""tomoforge.cli."""
