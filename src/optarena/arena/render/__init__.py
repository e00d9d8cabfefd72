"""The render layer: documents from views of results.

The document model (blocks rendered to Markdown and HTML, with safe Markdown for user-chosen
names), number formatting, the figures (each one function in :mod:`~optarena.arena.render.figures`)
and the report that assembles them. It reads results only through the analysis layer's views and
imports only the tasks, spec, run, study and analysis layers of the arena.
"""
