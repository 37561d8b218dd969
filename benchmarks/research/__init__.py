"""Research code measured and not kept in the package (see each module's docstring)."""
