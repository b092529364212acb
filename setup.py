"""Packaging is declared in setup.cfg; only the package list lives here, because setup.cfg
cannot add a package that `find:` does not see: the shipped weights of the top-level
`weights/` folder travel in wheels and sdists as package data of `minstf.shipped`
(minstf/zoo.py finds them there, or in `weights/` of a checkout)."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["minstf", "minstf.*"]) + ["minstf.shipped"],
      package_dir={"minstf.shipped": "weights"})
