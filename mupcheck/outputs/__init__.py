"""What users see: the markdown report and its plots, the pytest plugin and suite, the command line."""
