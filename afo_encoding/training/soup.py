"""Greedy model soup (Wortsman et al., 2022) over the top checkpoints of one fit.

Ingredients are tried once each, best validation score first; an ingredient stays in the
soup (a uniform average of weights) only when the soup's validation score rises. The best
checkpoint is the first ingredient and is never added twice, and the soup is chosen on the
same validation data as the checkpoints, never on a test split (two flaws of the authors'
code). A tensor equal in every ingredient (a frozen parameter, a constant buffer) is kept
as it is: an average of equal float32 tensors may differ from them in the last bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

StateDict = dict[str, torch.Tensor]


def greedy_soup(
    candidates: Sequence[tuple[float, Callable[[], StateDict]]],
    evaluate: Callable[[StateDict], float],
) -> tuple[StateDict, float, list[int]]:
    """Build a greedy soup: a uniform average of the checkpoints that improve validation.

    Parameters
    ----------
    candidates : sequence of (score, load)
        Validation score of each checkpoint and a function returning its state dict (so
        checkpoints on disk are read one at a time).
    evaluate : callable
        Validation score of a state dict (same data as the candidates' scores).

    Returns
    -------
    state : dict
        Weights of the soup.
    score : float
        Its validation score.
    ingredients : list of int
        Positions in ``candidates`` of the checkpoints in the soup, in the order they joined.
    """
    if not candidates:
        raise ValueError("A soup needs at least one checkpoint.")
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i][0])
    first = order[0]
    best_state = candidates[first][1]()
    best_score = candidates[first][0]
    first_state = best_state
    # running float32 sum of the ingredients' weights; integer buffers stay the best one's
    total = {k: v.float() if torch.is_floating_point(v) else v for k, v in best_state.items()}
    # floating tensors equal in every ingredient so far: kept, not averaged
    same = {k for k, v in best_state.items() if torch.is_floating_point(v)}
    ingredients = [first]
    for i in order[1:]:
        state = candidates[i][1]()
        trial_total = {
            k: total[k] + v.float() if torch.is_floating_point(v) else total[k]
            for k, v in state.items()
        }
        trial_same = {k for k in same if torch.equal(state[k], first_state[k])}
        n = len(ingredients) + 1
        trial = {
            k: (trial_total[k] / n).to(best_state[k].dtype)
            if torch.is_floating_point(best_state[k]) and k not in trial_same
            else first_state[k].clone()
            for k in best_state
        }
        score = evaluate(trial)
        if score > best_score:
            total, best_score, best_state, same = trial_total, score, trial, trial_same
            ingredients.append(i)
    return best_state, best_score, ingredients
