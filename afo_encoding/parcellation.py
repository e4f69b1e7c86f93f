"""veROI: voxel-wise encoding ROIs, from what each voxel's head has learned.

The paper groups voxels by the weights of their linear heads: voxels whose heads read the
same features of the shared representation form one "voxel-wise encoding ROI". With
hundreds of thousands of voxels a hierarchical clustering of the voxels themselves would
need a voxel x voxel matrix, so :func:`veroi` first compresses the voxels to
``n_prefilter`` k-means centroids (Euclidean, memory linear in voxels), then builds Ward's
hierarchy on the centroids, weighting each centroid by the number of voxels it stands for,
and cuts the tree by a number of ROIs or a distance.

Two flaws of the original code are avoided: Ward's method runs on the weight vectors
themselves (never on a similarity matrix treated as data), and the cut is a direct
``fcluster`` by count or distance, not a search loop that can fail to terminate.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.utils import check_random_state

__all__ = ["veroi", "ward_linkage"]

# above this many voxels, k-means runs in mini-batches so time and memory stay linear
_MINIBATCH_ABOVE = 50_000


def veroi(
    weights_or_encoder,
    n_rois: int | None = None,
    distance_threshold: float | None = None,
    n_prefilter: int = 1000,
    normalize: bool = False,
    random_state=None,
):
    """Parcellate voxels into veROIs by clustering their head weights.

    Parameters
    ----------
    weights_or_encoder : array | encoder | list
        What to cluster. One of:

        - an array ``(n_voxels, n_weights)``, one row of head weights per voxel;
        - a fitted encoder with ``coef_`` (an array, or a list of arrays, one per subject);
        - a list with one array per subject (their voxels are clustered together, so the
          same veROI label means the same thing in every subject);
        - a list of several fitted encoders, or a list of lists of arrays (``fits x
          subjects``): several fits of the same voxels. Their weights are concatenated per
          voxel, so the Euclidean distance between two voxels is summed over the fits.
          Unlike averaging the weights, this does not assume that unit ``k`` of one fit
          means the same as unit ``k`` of another.
    n_rois : int | None
        Cut the hierarchy into this many veROIs. Give exactly one of ``n_rois`` and
        ``distance_threshold``.
    distance_threshold : float | None
        Cut the hierarchy where Ward's merge distance exceeds this value (read it off the
        dendrogram of :func:`afo_encoding.plotting.plot_veroi_dendrogram`).
    n_prefilter : int
        Number of k-means centroids the voxels are first compressed to (paper: 1000).
        Capped at the number of voxels; with ``n_prefilter >= n_voxels`` the result is
        Ward's clustering of the voxels themselves.
    normalize : bool
        Scale every voxel's weight vector to unit length before clustering, so that voxels
        are grouped by which features they read rather than by how strongly (the
        strength of a head also reflects the voxel's signal-to-noise ratio). The paper
        clusters raw weights (``False``).
    random_state : int | RandomState | None
        Seed of k-means.

    Returns
    -------
    labels : ndarray of int, or list of ndarray
        veROI label per voxel, from 0 to ``n_rois - 1``, numbered in the left-to-right
        order of the dendrogram's leaves; one array per subject when several subjects were
        given.
    linkage : ndarray, shape (n_centroids - 1, 4)
        Ward's hierarchy of the k-means centroids in :func:`scipy.cluster.hierarchy.linkage`
        format (the fourth column counts centroids), for
        :func:`scipy.cluster.hierarchy.dendrogram`.

    Examples
    --------
    >>> import numpy as np
    >>> from afo_encoding.parcellation import veroi
    >>> rng = np.random.default_rng(0)
    >>> w = np.concatenate([rng.normal(m, 0.1, (50, 8)) for m in (-1, 0, 1)])
    >>> labels, linkage = veroi(w, n_rois=3, n_prefilter=20, random_state=0)
    >>> np.bincount(labels).tolist()
    [50, 50, 50]
    """
    if (n_rois is None) == (distance_threshold is None):
        raise ValueError(
            "Give exactly one of n_rois and distance_threshold, got "
            f"n_rois={n_rois!r} and distance_threshold={distance_threshold!r}."
        )
    per_subject, several_subjects = _collect_weights(weights_or_encoder)
    sizes = [w.shape[0] for w in per_subject]
    weights = np.concatenate(per_subject, axis=0)
    n_voxels = weights.shape[0]
    if n_voxels < 2 or np.all(weights == weights[0]):
        raise ValueError(
            f"All {n_voxels} voxels have the same weights, so there is nothing to "
            "parcellate. Check that the encoder was fitted."
        )
    if normalize:
        norms = np.linalg.norm(weights, axis=1, keepdims=True)
        weights = weights / np.where(norms > 0, norms, 1.0)

    if not isinstance(n_prefilter, numbers.Integral) or n_prefilter < 2:
        raise ValueError(f"n_prefilter must be an integer >= 2, got {n_prefilter!r}.")
    n_centroids = min(int(n_prefilter), n_voxels)
    if n_rois is not None:
        if not isinstance(n_rois, numbers.Integral) or not 1 <= n_rois <= n_centroids:
            raise ValueError(
                f"n_rois must be an integer between 1 and the number of k-means centroids "
                f"({n_centroids}), got {n_rois!r}. Raise n_prefilter or lower n_rois."
            )
    elif not distance_threshold > 0:
        raise ValueError(f"distance_threshold must be > 0, got {distance_threshold!r}.")

    if n_centroids == n_voxels:
        centroids, assignment = weights, np.arange(n_voxels)
    else:
        centroids, assignment = _kmeans(weights, n_centroids, random_state)
    counts = np.bincount(assignment, minlength=len(centroids)).astype(np.float64)
    keep = counts > 0  # mini-batch k-means can leave a centroid empty
    if not keep.all():
        remap = np.cumsum(keep) - 1
        centroids, counts, assignment = centroids[keep], counts[keep], remap[assignment]
    linkage = ward_linkage(centroids, counts)
    if n_rois is not None:
        cluster = fcluster(linkage, t=min(int(n_rois), len(centroids)), criterion="maxclust")
    else:
        cluster = fcluster(linkage, t=float(distance_threshold), criterion="distance")
    # number the veROIs left to right along the dendrogram's leaves
    leaves = _leaf_order(linkage)
    order = {c: i for i, c in enumerate(dict.fromkeys(cluster[leaves]))}
    centroid_labels = np.array([order[c] for c in cluster])
    labels = centroid_labels[assignment]
    if not several_subjects:
        return labels, linkage
    return list(np.split(labels, np.cumsum(sizes)[:-1])), linkage


def ward_linkage(centroids: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Ward's hierarchical clustering of weighted points.

    Each point stands for ``counts[i]`` voxels at the same place; merging clusters ``A``
    and ``B`` costs the increase of the within-cluster sum of squares,
    ``n_A n_B / (n_A + n_B) * ||c_A - c_B||^2``. With all counts 1 this is exactly
    :func:`scipy.cluster.hierarchy.ward` (same merges, same heights).

    Parameters
    ----------
    centroids : ndarray, shape (n_points, n_features)
        The points, e.g. k-means centroids.
    counts : ndarray, shape (n_points,) | None
        How many voxels each point stands for; ``None`` means one each.

    Returns
    -------
    linkage : ndarray, shape (n_points - 1, 4)
        In :func:`scipy.cluster.hierarchy.linkage` format: merged cluster ids, the merge
        height ``sqrt(2 * cost)`` and the number of points in the new cluster.
    """
    points = np.asarray(centroids, dtype=np.float64)
    n = points.shape[0]
    if n < 2:
        raise ValueError(f"Ward's linkage needs at least 2 points, got {n}.")
    sizes = np.ones(n) if counts is None else np.asarray(counts, dtype=np.float64).copy()
    if sizes.shape != (n,) or np.any(sizes <= 0):
        raise ValueError(f"counts must be {n} positive numbers, got shape {sizes.shape}.")
    centres = points.copy()
    n_points = np.ones(n)
    ids = np.arange(n)
    sq_norms = np.einsum("ij,ij->i", centres, centres)
    cost = sq_norms[:, None] + sq_norms[None, :] - 2.0 * centres @ centres.T
    np.maximum(cost, 0.0, out=cost)
    cost *= sizes[:, None] * sizes[None, :] / (sizes[:, None] + sizes[None, :])
    np.fill_diagonal(cost, np.inf)
    active = np.ones(n, dtype=bool)
    linkage = np.empty((n - 1, 4))
    for step in range(n - 1):
        flat = int(np.argmin(cost))
        a, b = divmod(flat, n)
        a, b = min(a, b), max(a, b)
        linkage[step] = (min(ids[a], ids[b]), max(ids[a], ids[b]),
                         np.sqrt(2.0 * cost[a, b]), n_points[a] + n_points[b])
        # the merged cluster takes slot a; slot b is retired
        total = sizes[a] + sizes[b]
        centres[a] = (sizes[a] * centres[a] + sizes[b] * centres[b]) / total
        sizes[a], n_points[a], ids[a] = total, n_points[a] + n_points[b], n + step
        active[b] = False
        cost[b, :] = np.inf
        cost[:, b] = np.inf
        others = np.flatnonzero(active)
        others = others[others != a]
        diff = centres[others] - centres[a]
        new = sizes[others] * total / (sizes[others] + total) * np.einsum("ij,ij->i", diff, diff)
        cost[a, others] = new
        cost[others, a] = new
    return linkage


def _kmeans(weights: np.ndarray, n_clusters: int, random_state):
    rng = check_random_state(random_state)
    if weights.shape[0] > _MINIBATCH_ABOVE:
        km = MiniBatchKMeans(n_clusters=n_clusters, batch_size=max(4096, 4 * n_clusters),
                             n_init=3, random_state=rng)
    else:
        km = KMeans(n_clusters=n_clusters, n_init=1, random_state=rng)
    assignment = km.fit_predict(weights)
    return km.cluster_centers_.astype(np.float64), assignment


def _leaf_order(linkage: np.ndarray) -> np.ndarray:
    """Leaves of the hierarchy from left to right, as :func:`dendrogram` draws them."""
    n = linkage.shape[0] + 1
    children = {n + i: (int(row[0]), int(row[1])) for i, row in enumerate(linkage)}
    order, stack = [], [2 * n - 2]
    while stack:
        node = stack.pop()
        if node < n:
            order.append(node)
        else:
            left, right = children[node]
            stack.extend((right, left))
    return np.asarray(order)


def _as_weight_array(w, where: str) -> np.ndarray:
    coef = getattr(w, "coef_", w)
    if isinstance(coef, Sequence) and not isinstance(coef, np.ndarray):
        raise TypeError(f"{where}: expected one weight array, got a list of {len(coef)}.")
    arr = np.asarray(coef, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{where}: head weights must be a 2D array (n_voxels, n_weights), "
            f"got shape {arr.shape}."
        )
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(
            f"{where}: {bad} voxels have NaN or infinite weights. Drop them before "
            "calling veroi (e.g. voxels that were constant during the fit)."
        )
    return arr


def _per_subject(item, where: str) -> tuple[list[np.ndarray], bool]:
    """One fit's weights as a list over subjects, and whether they came as a list."""
    coef = getattr(item, "coef_", item)
    if isinstance(coef, list | tuple):
        return [_as_weight_array(w, f"{where}, subject {s}") for s, w in enumerate(coef)], True
    return [_as_weight_array(coef, where)], False


def _collect_weights(source) -> tuple[list[np.ndarray], bool]:
    """Every accepted input as a list over subjects of (n_voxels, n) arrays, and whether
    the caller gave subjects as a list (then labels go back as a list)."""
    if hasattr(source, "coef_") or isinstance(source, np.ndarray):
        return _per_subject(source, "weights")
    if not isinstance(source, list | tuple) or len(source) == 0:
        raise TypeError(
            "veroi expects a weight array, a fitted encoder, or a list of them, "
            f"got {type(source).__name__}."
        )
    several_fits = all(hasattr(s, "coef_") for s in source) and len(source) > 1 or all(
        isinstance(s, list | tuple) for s in source
    )
    if not several_fits:
        return [_as_weight_array(w, f"subject {s}") for s, w in enumerate(source)], True
    collected = [_per_subject(f, f"fit {i}") for i, f in enumerate(source)]
    fits = [weights for weights, _ in collected]
    shapes = [[w.shape[0] for w in fit] for fit in fits]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(
            "Several fits must cover the same voxels of the same subjects; voxel counts per "
            f"subject differ between fits: {shapes}."
        )
    per_subject = [np.concatenate([fit[s] for fit in fits], axis=1) for s in range(len(fits[0]))]
    return per_subject, collected[0][1]
