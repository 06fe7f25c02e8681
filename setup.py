"""pip entry point; the package metadata lives in setup.cfg."""

from setuptools import setup

setup()
