"""pytest plugin (grid files as test suites): see issue 3."""
