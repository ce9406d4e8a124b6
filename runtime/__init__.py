"""Job infrastructure: typed config resolved once (``config``), the one session builder
(``session``), Delta writes (``lake``), input checks and quarantine (``validation``), what every
job's ``main`` does (``entry``), the CLI (``cli``) and the ``--py-files`` zip (``package``).
Jobs import from here; nothing here imports a job (the CLI names job modules as strings)."""
