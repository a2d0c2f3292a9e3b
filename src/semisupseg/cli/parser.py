"""The argument parser every ``semisupseg`` command uses: exact option names, short errors, plain help text.

:class:`Parser` is :class:`argparse.ArgumentParser` with four changes, so that all commands behave alike:

* no abbreviations (``allow_abbrev=False``): ``--iteration`` is not silently taken for ``--iterations``;
* an unknown option is reported by the command it was given to, before anything else is checked, with the closest
  known name: ``semisupseg segment: error: unknown option --modle (did you mean --model?)`` (argparse would first
  complain that ``--model`` is missing, or print the top-level usage for an option it did not know);
* errors are two short lines (the problem, then where the options are listed), not the usage block first;
* help texts are plain: reST markup of the docstrings they are made from (double backquotes, ``:class:`` roles,
  ``**bold**``) is removed, and "(default: ...)" is shown only for options that take a value with a real default
  (never "(default: True)" on a switch such as ``--no-fast``).

Sub-commands (``parser.add_subparsers().add_parser(...)``) are built with the same class.
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import List, NoReturn, Optional, Sequence

_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]*?)\s*(?:<[^`>]*>)?`")
_LITERAL = re.compile(r"``([^`]+?)``")
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
_EMPHASIS = re.compile(r"(?<![\w*])\*(\S(?:[^*\n]*?\S)?)\*(?![\w*])")


def plain_text(text: str) -> str:
    """``text`` without the reST markup docstrings use: ``x`` -> x, :class:`~a.B` -> B, :func:`f` -> f,
    :ref:`words <target>` -> words, **x** / *x* -> x (a ``*`` that starts a bullet line is kept)."""
    if not text:
        return text

    def role(m: "re.Match[str]") -> str:
        name = m.group(1)
        return name.rsplit(".", 1)[-1] if m.group(0).startswith(":") and "`~" in m.group(0) else name

    text = _ROLE.sub(role, text)
    text = _LITERAL.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    return _EMPHASIS.sub(r"\1", text)


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" only where it informs: options taking a value whose default is not ``None``."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        text = action.help or ""
        if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or isinstance(action.default, bool):
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` for semisupseg commands (see the module doc)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        if kwargs.get("formatter_class") is argparse.ArgumentDefaultsHelpFormatter:
            kwargs["formatter_class"] = DefaultsFormatter
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------------------------------------ help
    def format_help(self) -> str:
        return plain_text(super().format_help())

    def format_usage(self) -> str:
        return plain_text(super().format_usage())

    # ------------------------------------------------------------------------------------------------ errors
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n({self.prog} --help lists the options)\n")

    def _subcommands(self) -> Optional[argparse._SubParsersAction]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
        return None

    def _takes_values(self, token: str) -> int:
        """How many following tokens the known option ``token`` may consume at most (``-1``: any number)."""
        action = self._option_string_actions.get(token.split("=", 1)[0])
        if action is None or "=" in token:
            return 0
        nargs = action.nargs
        if nargs is None:
            return 1
        if isinstance(nargs, int):
            return nargs
        return 1 if nargs == argparse.OPTIONAL else -1

    def _scan(self, args: Sequence[str]):
        """``(unknown, first_positional)``: the first option in ``args`` this parser does not know and the first
        free positional token (not a value of a known option), each ``None`` when absent. The scan stops at
        ``--`` and at this parser's sub-command name (what follows is the sub-command's)."""
        sub = self._subcommands()
        pending = 0  # values still owed to the previous option
        first = None
        for token in args:
            if token == "--":
                break
            looks_like_option = token.startswith("-") and token != "-" and \
                not self._negative_number_matcher.match(token)
            if not looks_like_option:
                if pending > 0:
                    pending -= 1
                    continue
                if first is None:
                    first = token
                if sub is not None:
                    break
                continue
            name = token.split("=", 1)[0]
            if name in self._option_string_actions or (not name.startswith("--") and
                                                       token[:2] in self._option_string_actions):
                pending = self._takes_values(token) if name in self._option_string_actions else 0
                continue
            return name, first
        return None, first

    def unknown_option(self, args: Sequence[str]) -> Optional[str]:
        """The first option in ``args`` this parser does not know, or ``None`` (see :meth:`_scan`)."""
        return self._scan(args)[0]

    def suggestion(self, name: str) -> str:
        known = [s for s in self._option_string_actions if s.startswith("--")] if name.startswith("--") else \
            list(self._option_string_actions)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if not close:  # a prefix of exactly one option (what argparse used to accept silently)
            close = [s for s in known if s.startswith(name)][:2]
            close = close if len(close) == 1 else []
        return f" (did you mean {close[0]}?)" if close else ""

    def parse_known_args(self, args: Optional[Sequence[str]] = None, namespace=None):
        argv: List[str] = list(sys.argv[1:] if args is None else args)
        bad = self.unknown_option(argv)
        if bad is not None:
            self.error(f"unknown option {bad}{self.suggestion(bad)}")
        sub = self._subcommands()
        command = self._scan(argv)[1]
        if sub is not None and command is not None and command not in sub.choices:
            close = difflib.get_close_matches(command, list(sub.choices), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else f" (commands: {', '.join(sub.choices)})"
            self.error(f"unknown command {command!r}{hint}")
        return super().parse_known_args(argv, namespace)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` of the inference commands (``segment``, ``rank``), applied by :func:`apply_threads`."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads (default: PyTorch's, one per core); fewer is much faster on a machine "
                             "busy with other work")


def apply_threads(threads: Optional[int]) -> None:
    """Set PyTorch's CPU threads to ``--threads`` (``None``: leave its default); fewer than 1 is one error line."""
    if threads is None:
        return
    from semisupseg.errors import InputError

    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(int(threads))


__all__ = ["Parser", "DefaultsFormatter", "add_threads_option", "apply_threads", "plain_text"]
