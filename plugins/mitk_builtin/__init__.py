"""mitk's built-in plugins. They register through the ``mitk.plugins`` entry-point group, like any other."""
