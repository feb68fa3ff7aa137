"""mupcheck: does your learning rate really transfer under muP?"""

__version__ = "0.1.0"
