"""The bottom layer: types the core and every connector share.

The packet a kit judges, the field mapping that builds it, the stored decision, the write
requests a connector carries out, the connector interfaces and their three kinds of error.
Nothing here imports `bridge` or `connectors`; `make lint` (import-linter) holds it to that.
"""
