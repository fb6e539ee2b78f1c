"""The ground floor: configuration, manifests, the process environment, tracking and plots.

Imports nothing from the stages (``tokenmill.spark_jobs``, ``tokenmill.training``) nor from the floors above
(``tokenmill.flows``, the CLI and ``tokenmill.services``); ``tests/test_layers.py`` keeps it so.
"""
