"""pinpipe's YAML configuration (``base.yaml`` + one overlay per environment).

A package only so the YAML travels inside the ``--py-files`` zip; see ``runtime.config``.
"""
