"""Example models for the python adapter: the reference problems of docs/references.md."""
