"""The ``uqkd`` console script: ``main(argv=None) -> int``.

User errors (unknown experiment, unknown or ill-typed key, bad value, missing file) print
one line ``uqkd: error: ...`` and return 2, without a traceback. Failures of the environment
(a full disk, an unwritable or blocked --out, a killed worker) print one line and return 1.
Anything else is a bug: one line naming it, exit 1; ``--debug`` (before COMMAND) shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .config import EnvironmentFailure, UserError

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

# Extra subcommand groups register here: name -> (add_parser(subparsers), run(args) -> int).
SUBCOMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = {}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise UserError(message)


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def _cmd_list(args: argparse.Namespace) -> int:
    from .experiments import list_experiments

    exps = list_experiments()
    width = max(len(e.name) for e in exps)
    for e in exps:
        print(f"{e.name:<{width}}  §{e.section:<3} {e.description}")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .methods import METHODS, method_names

    names = method_names(args.domain)
    width = max(len(n) for n in names)
    for n in names:
        m = METHODS[n]
        flags = [f for f, on in (("oracle", m.oracle), ("beyond the paper", m.beyond_paper),
                                 ("needs an embedder (LLM)", m.needs_embedder)) if on]
        also = [f"alias {a}" for a in m.aliases] + [f"deprecated name {a}" for a in m.deprecated]
        print(f"{n:<{width}}  [{', '.join(m.domains)}]{' ' + '; '.join(flags + also) if flags or also else ''}  "
              f"{m.description}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from .config import config_to_dict, describe_fields, renamed_fields
    from .experiments import get_experiment
    from .runner import resolve_config

    exp = get_experiment(args.experiment)
    cfg = config_to_dict(resolve_config(exp, args.profile))
    print(f"{exp.name} (§{exp.section}): {exp.description}")
    print(f"settings at profile {args.profile!r}:")
    old = {}
    for prev, new in renamed_fields(exp.config_cls).items():
        old.setdefault(new, []).append(prev)
    for name, tp, _default, help_ in describe_fields(exp.config_cls):
        was = f" (formerly {', '.join(old[name])})" if name in old else ""
        print(f"  {name} = {cfg[name]!r}  [{tp}]  {help_}{was}")
    return 0


def _check_executor_args(args: argparse.Namespace) -> None:
    if args.ray_address is not None and args.executor != "ray":
        raise UserError(f"--ray-address {args.ray_address!r}: applies only with --executor ray")


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_experiment

    _check_executor_args(args)

    res = run_experiment(
        args.experiment,
        profile=args.profile,
        out=args.out,
        overrides=args.set or None,
        config_file=args.config,
        workers=args.workers,
        seed=args.seed,
        progress=not args.quiet,
        executor=args.executor,
        ray_address=args.ray_address,
    )
    print(
        f"{res.experiment}: {res.n_cells} cells ({res.n_computed} computed, "
        f"{res.n_cells - res.n_computed} reused) in {res.seconds:.1f}s"
    )
    print(f"results: {res.results_csv}")
    for f in res.figures:
        print(f"figure:  {f}")
    return 0


def _add_executor_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--executor", default="local", choices=("local", "ray"),
                    help="where cells run: local processes (default) or a Ray cluster (pip install 'uqkd[ray]')")
    sp.add_argument("--ray-address", default=None, metavar="ADDRESS",
                    help="with --executor ray: 'auto' joins a running cluster, HOST:PORT a given head; "
                         "default starts a local Ray instance")


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import reproduce

    _check_executor_args(args)

    md, html, failed = reproduce(profile=args.profile, out=args.out, only=args.only, workers=args.workers,
                                 seed=args.seed, progress=not args.quiet, executor=args.executor,
                                 ray_address=args.ray_address)
    print(f"report: {html}")
    print(f"report: {md}")
    claims = [f for f in failed if f.startswith("claim ")]
    exps = [f for f in failed if not f.startswith("claim ")]
    if exps:
        print(f"failed experiments (rerun to resume): {', '.join(exps)}", file=sys.stderr)
    if claims:
        print(f"claims whose code raised (a bug, not a verdict): {'; '.join(claims)}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report.report import build_report

    md, html = build_report(args.dir)
    print(f"report: {html}")
    print(f"report: {md}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="uqkd", description="Uncertainty-aware knowledge distillation.")
    p.add_argument("--version", action="version", version=f"uqkd {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug); before COMMAND")
    p.add_argument("-q", "--quiet", action="count", default=0, help="only errors; before COMMAND")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks of failures; before COMMAND")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    sub.required = True

    sp = sub.add_parser("list", help="list experiments with one-line descriptions")
    sp.set_defaults(func=_cmd_list)

    sp = sub.add_parser("methods", help="list the distillation methods (one registry: uqkd.methods.METHODS)")
    from .methods import DOMAINS

    sp.add_argument("--domain", choices=DOMAINS, default=None, help="only the tabular or the LLM methods")
    sp.set_defaults(func=_cmd_methods)

    sp = sub.add_parser("show", help="show an experiment's settings at a profile")
    sp.add_argument("experiment")
    sp.add_argument("--profile", default="quick", choices=("demo", "quick", "paper"))
    sp.set_defaults(func=_cmd_show)

    sp = sub.add_parser("run", help="run (or resume) one experiment")
    sp.add_argument("experiment", help="experiment name (see `uqkd list`)")
    sp.add_argument("--profile", default="quick", choices=("demo", "quick", "paper"), help="settings preset")
    sp.add_argument("--out", default="results", help="results root directory (default: results)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    sp.add_argument("--config", default=None, metavar="FILE", help="TOML or JSON file of config fields")
    sp.add_argument("--workers", type=_workers, default="auto",
                    help="local worker processes, or 'auto' (one per core for sweeps of 16+ cells; default)")
    sp.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_executor_args(sp)
    sp.set_defaults(func=_cmd_run)

    sp = sub.add_parser("reproduce", help="run every experiment of a profile and build the report")
    sp.add_argument("--profile", default="quick", choices=("demo", "quick", "paper"), help="settings preset")
    sp.add_argument("--out", default="results", help="results root directory (default: results)")
    sp.add_argument("--only", nargs="+", metavar="SECTION", help="paper sections (4 5 6 7) or experiment names")
    sp.add_argument("--workers", type=_workers, default="auto", help="local worker processes or 'auto'")
    sp.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_executor_args(sp)
    sp.set_defaults(func=_cmd_reproduce)

    sp = sub.add_parser("report", help="(re)build report.md and report.html from results on disk")
    sp.add_argument("dir", help="results directory (as given to --out)")
    sp.set_defaults(func=_cmd_report)

    for add, run in SUBCOMMANDS.values():
        add(sub)
        del run
    return p


def _load_plugins() -> None:
    """Import optional subcommand groups (they register into SUBCOMMANDS)."""
    import importlib

    for mod in ("uqkd.llm.cli",):
        try:
            importlib.import_module(mod)
        except ImportError:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 user error).

    Called without ``argv`` (the ``uqkd`` command, ``python -m uqkd``) it is the process's last
    work: it then freezes the garbage collector's objects (:func:`gc.freeze`) on the way out, so
    the interpreter's shutdown does not trace the whole heap of pandas, matplotlib and the results
    once more (about 0.13 s of every run on 2 cores). ``atexit`` handlers, file closing and every
    object's reference-count cleanup still run; only cycles are left to the operating system.
    """
    try:
        return _main(argv)
    finally:
        if argv is None:
            import gc

            gc.freeze()


def _main(argv: Sequence[str] | None) -> int:
    from . import _malloc

    _malloc.tune()  # recycle the sweeps' multi-megabyte arrays instead of mmap/munmap per array
    _load_plugins()
    parser = build_parser()
    av = list(argv) if argv is not None else sys.argv[1:]
    verbosity = 0
    debug = False
    while av and av[0] in ("-v", "-q", "--verbose", "--quiet", "--debug"):
        flag = av.pop(0)
        if flag == "--debug":
            debug = True
        else:
            verbosity += 1 if flag in ("-v", "--verbose") else -1
    import logging

    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(max(-1, min(verbosity, 2)), logging.DEBUG)
    logging.basicConfig(level=logging.WARNING, format="uqkd: %(levelname)s: %(message)s")
    logging.getLogger("uqkd").setLevel(level)
    try:
        args = parser.parse_args(av)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"uqkd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uqkd: interrupted; finished cells are saved, rerun the same command to resume", file=sys.stderr)
        return 130
    except EnvironmentFailure as exc:
        if debug:
            raise
        print(f"uqkd: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if debug:
            raise
        print(f"uqkd: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except UnicodeDecodeError as exc:
        if debug:
            raise
        print(f"uqkd: error: a file is not UTF-8 text (byte {exc.start}: {exc.reason})", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback with --debug
        if debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else ""
        print(f"uqkd: internal error: {type(exc).__name__}: {msg} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system failure: what failed, on which path, and what to do for common causes."""
    import errno

    where = " ".join(repr(str(f)) for f in (exc.filename, exc.filename2) if f is not None)
    hint = {errno.ENOSPC: "the disk is full; free space and rerun (finished cells are kept)",
            errno.EDQUOT: "the disk quota is exceeded; free space and rerun",
            errno.EACCES: "permission denied; choose a writable --out",
            errno.EROFS: "the file system is read-only; choose a writable --out",
            errno.ENOTDIR: "a path component is a file, not a folder",
            errno.EEXIST: "a file is in the way",
            errno.EISDIR: "a folder is where a file is expected"}.get(exc.errno or -1, "")
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text}{': ' + where if where else ''}" + (f" ({hint})" if hint else "")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
