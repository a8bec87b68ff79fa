"""The commands of ``conveyor``, one module per theme."""
