"""corekd's version: a module of its own at the bottom of the package, so that any module can name the version
without importing the package's public facade (:mod:`corekd`, which sits above everything)."""

__version__ = "0.1.0"
