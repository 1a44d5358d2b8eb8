"""The stand-ins that tests and benchmarks share: a local SendGrid Mail Send API that checks
every request against SendGrid's own schema (``sendgrid_standin``), and the environment of a
child process that runs with exactly the settings its parent built (``processes``).

A package of its own, beside ``mailer/`` and not inside ``tests/``, so that ``bench/``
scripts use the same stand-ins without importing the test suite.
"""
