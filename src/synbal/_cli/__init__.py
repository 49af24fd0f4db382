"""The ``synbal`` command line: argument parsing, subcommands and their file handling.

The library never sees :mod:`argparse`; everything here turns command-line options into calls
of the public API.
"""
