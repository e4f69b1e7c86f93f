"""Process groups that fail instead of hanging.

A DDP fit whose processes stop waiting for each other (one died, or never joined) would
wait for torch's default of 30 minutes, or forever in a test. Fabric's DDP strategies named
by string get a process-group timeout here: a collective operation that waits longer raises
an error naming the timeout.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

#: seconds a process waits for the others in one collective operation (all-reduce, barrier)
DEFAULT_TIMEOUT = 600.0

# Fabric's DDP strategy names and the start method each stands for
_DDP_START = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


def with_timeout(strategy: Any, timeout: float | None) -> Any:
    """``strategy`` as Fabric takes it, a DDP one with a process-group ``timeout``.

    Parameters
    ----------
    strategy : str or Fabric strategy
        A name (``"ddp"``, ``"ddp_spawn"``...) or a strategy object (returned as is: it
        carries its own timeout).
    timeout : float or None
        Seconds; ``None`` keeps torch's default.

    Returns
    -------
    strategy : str or lightning.fabric.strategies.DDPStrategy
    """
    if timeout is None or not isinstance(strategy, str) or strategy not in _DDP_START:
        return strategy
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    from lightning.fabric.strategies import DDPStrategy

    return DDPStrategy(start_method=_DDP_START[strategy], timeout=timedelta(seconds=timeout))
