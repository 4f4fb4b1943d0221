"""Type stubs for the native extension built from ``crates/ferrocorn-py``."""

__version__: str

def main(argv: list[str]) -> int:
    """Parse ``argv`` (program name first), serve until stopped, and return the exit code."""
    ...
