"""Tasks: the JEDI-like layer that turns a task's parameters into datasets, files and jobs."""
