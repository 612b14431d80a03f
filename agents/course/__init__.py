"""The course notebook (`docs/tutorial.ipynb`) graded automatically.

- `agents.course.checks`: what each exercise must define, and the checks of those answers;
- `agents.course.grade`: runs notebooks in a fresh kernel, grades them, writes the points
  (`python -m agents.course.grade NOTEBOOK_OR_FOLDER ...`).
"""
