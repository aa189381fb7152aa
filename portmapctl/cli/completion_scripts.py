"""The shell completion scripts: typer's, with zsh's made to complete the first TAB.

typer's zsh script only registers its function (compdef). `portmapctl
--install-completion` in zsh writes it to ~/.zfunc/_portmapctl and puts ~/.zfunc in
fpath, where compinit autoloads it on the first TAB of every new shell: that TAB ran
the registration alone and completed nothing (`gc --dry` stayed; the second TAB gave
--dry-run). Click's own zsh script solves it the same way: autoloaded, it completes
that TAB too; sourced, it registers. --show-completion and --install-completion give
this script (typer_app.py), and so do the committed completions/ (tools/gendocs.py).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

# In typer's template (typer/_completion_shared.py), its placeholders as they are.
ZSH_TYPER_TAIL = "compdef %(complete_func)s %(prog_name)s"
ZSH_TAIL = """\
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  # autoloaded from fpath (--install-completion's ~/.zfunc): complete this TAB now
  %(complete_func)s "$@"
else
  # sourced (--show-completion's output): register for later TABs
  compdef %(complete_func)s %(prog_name)s
fi"""

OPTIONS = ("--show-completion", "--install-completion")


def asks_for_a_script(args: list) -> bool:
    """Whether `args` ask typer for a completion script (to print or to install)."""
    return any(str(arg).split("=", 1)[0] in OPTIONS for arg in args)


def typer_knows_the_tail() -> bool:
    """Whether typer's zsh template still ends as this module expects (gendocs fails
    when it does not: the committed script must not silently lose its first TAB)."""
    from typer import _completion_shared as shared

    return ZSH_TYPER_TAIL in shared._completion_scripts.get("zsh", "")


@contextlib.contextmanager
def zsh_completes_the_first_tab() -> Iterator[None]:
    """typer's zsh template with ZSH_TAIL for its tail while the block runs (typer
    reads its template from its module's table; it has no other way in), as it was
    afterwards. A template that no longer ends so is left as it is."""
    from typer import _completion_shared as shared

    scripts = shared._completion_scripts
    typer_zsh = scripts.get("zsh", "")
    if ZSH_TYPER_TAIL not in typer_zsh:
        yield
        return
    scripts["zsh"] = typer_zsh.replace(ZSH_TYPER_TAIL, ZSH_TAIL)
    try:
        yield
    finally:
        scripts["zsh"] = typer_zsh
