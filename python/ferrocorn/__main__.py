"""The ``ferrocorn`` command: ``ferrocorn [OPTIONS] APP`` or ``python -m ferrocorn [OPTIONS] APP``.

``ferrocorn ctl COMMAND`` is the control client instead (:mod:`ferrocorn.ctl`); an app module
named ``ctl`` must then be given as ``ctl:application``.

Argument parsing, serving and exit codes all belong to the Rust side; this module only hands it
the command line and turns Ctrl-C during start-up into the conventional exit status.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: Exit status of a process stopped by SIGINT (128 + 2), as shells report it.
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server with ``argv`` (program name first; defaults to ``sys.argv``).

    Returns the process exit code.
    """
    args = list(sys.argv if argv is None else argv)
    if not args:
        args = ["ferrocorn"]
    if args[1:2] == ["ctl"]:
        # `ferrocorn ctl ...` talks to a running server's control socket (ferrocorn.ctl).
        from ferrocorn import ctl

        return ctl.main(args[2:])
    try:
        from ferrocorn import _ferrocorn

        return _ferrocorn.main(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    # The program name shown in --help and usage errors: how this was actually invoked.
    sys.exit(main(["python -m ferrocorn", *sys.argv[1:]]))
