"""Front-end outputs built from a project: the export in other tools' formats (and, to come, the HTML report)."""
