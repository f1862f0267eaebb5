"""SCAn (Tang et al., "Demon in the Variant: Statistical Analysis of DNNs for Robust Backdoor Contamination
Detection", USENIX Security 2021): statistical contamination analysis of a model's representations.

Every representation is modelled as ``r = mu_class + e``: an identity part ``mu_class ~ N(0, S_mu)`` shared by the
samples of a class, and a variation part ``e ~ N(0, S_e)`` whose distribution is the same for every class. ``S_mu``
and ``S_e`` are estimated together by EM over all classes (the *global model*, on rows believed clean when a
``reference`` is given). A poisoned target class is a mixture: its own samples plus samples of another class
carrying a trigger, which the model maps to the target label but whose *variation* differs. So for each class a
two-subgroup *untangling* model (two identities ``mu_1``, ``mu_2`` sharing ``S_e``) is fitted by alternating
assignment / mean updates, and the statistic ``J`` compares it with the one-identity model:

    J_c = (1/n_c) * sum_i [ (r_i - mu)' S_e^-1 (r_i - mu) - (r_i - mu_{z_i})' S_e^-1 (r_i - mu_{z_i}) ]

(twice the per-sample log-likelihood ratio; ``mu`` is the posterior mean of the class identity under the global
model). Any class can be split somewhat, and classes of real data are often multimodal, so ``J`` is judged *relative
to the other classes*: the anomaly index is the robust z-score ``(J_c - median) / (1.4826 * MAD)`` and a class is a
target when its index exceeds ``THRESHOLD`` on the high side only (a class that splits *less* well than the others
is no sign of poison).

Threshold: ``e**2 ~ 7.39``, as in the paper (some public reimplementations use ``e``). With ten or so classes the
median and MAD are themselves noisy, so two-sided z-score practice (2 or 3) flags clean classes by chance: on the
synthetic sets of the tests (12 seeds, 10 classes) clean classes reach an index of 3.5 and evenly bimodal classes
6.3, while a class with a 15% poisoned minority scores 47 to 700. It is a keyword, for callers that accept more
false alarms.

Known bias: on a Gaussian class of ``n`` rows in ``p`` dimensions the best split still gains roughly
``(2/pi) (1 + sqrt(p/n))**2`` (more for small n), so a class much smaller than the others (n of a few times
``dims``) gets a higher J and index from its size alone (measured: 60 rows among classes of 400-3000, index 5-6.5);
``min_class`` and ``dims`` bound the effect.

Practical choices (not in the paper): the representations are first reduced by PCA to ``dims`` components so that
the covariances are well-conditioned and the EM is cheap. The PCA is fitted on all rows, poison included, so a
trigger direction that carries enough variance is kept; one confined to directions of little variance is lost (the
price of reducing first: raise ``dims`` if that matters more than speed and small-class bias). Covariances are
shrunk slightly towards a multiple of the identity. The untangling starts from the split along the class's first
principal direction (in ``S_e``-whitened space) and from a few seeded k-means++ pairs, and keeps the best. The EM
works on per-class sufficient statistics, so its cost does not grow with the number of rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from worker.robust import centre_and_spread

THRESHOLD = math.exp(2)  # the paper's: a class is a target when its anomaly index exceeds e**2
SHRINK = 1e-4  # covariances are shrunk by this fraction towards (trace / dims) * I
RESTARTS = 3  # seeded k-means++ starts of the untangling, besides the principal-direction split
PCA_FIT_MAX = 200_000  # rows the PCA is fitted on (a seeded sample beyond); every row is projected
PCA_BLOCK = 50_000  # rows projected at once
STATS_BLOCK = 200_000  # rows whose sums and scatter (and whitening) are computed at once: no copy of every row


@dataclass
class UntangleResult:
    """What SCAn found. Class ``c`` is row ``c`` of the arrays (labels are the integers ``0 .. k-1``)."""

    statistic: np.ndarray  # (k,) J per class; nan for classes with fewer than min_class samples (or absent)
    anomaly: np.ndarray  # (k,) robust z-score of J across the classes with a statistic; nan elsewhere
    minority: dict[int, np.ndarray]  # class -> dataset row indices of its smaller subgroup (every split class)
    targets: list[int]  # classes whose anomaly index exceeds the threshold (high side only), ascending
    threshold: float


def untangle(reps: np.ndarray, labels: np.ndarray, *, reference: np.ndarray | None = None, seed: int = 0,
             dims: int = 32, max_iter: int = 50, min_class: int = 20,
             threshold: float = THRESHOLD) -> UntangleResult:
    """Run SCAn on representations ``reps`` (n, d) with integer ``labels`` (n,) in ``0 .. k-1``.

    reference: optional boolean mask (n,) or index array of rows believed clean, used to estimate ``S_e`` and
    ``S_mu``; default all rows. Every class with at least ``min_class`` rows is untangled, whatever the reference.
    seed: seeds the PCA and the untangling restarts; the result is a function of the inputs and the seed.
    dims: PCA components kept (fewer when the data have fewer dimensions or less rank).
    max_iter: iteration cap of the global EM and of each untangling run.
    min_class: classes with fewer rows get no statistic (nan) and are never targets.
    threshold: anomaly index above which a class is a target.
    """
    reps = np.asarray(reps)  # float32 activations stay float32: a float64 copy of 1,000,000 x 256 is 2 GB
    labels = np.asarray(labels)
    if reps.ndim != 2 or labels.shape != (len(reps),):
        raise ValueError(f"reps must be (n, d) and labels (n,); got {reps.shape} and {labels.shape}")
    if len(reps) == 0:
        raise ValueError("no representations")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.mod(labels, 1) == 0):
            raise ValueError("labels must be integers")
        labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise ValueError("labels must be non-negative")
    if not np.all(np.isfinite(reps)):
        raise ValueError("representations contain NaN or infinity")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    k = int(labels.max()) + 1
    ref = _reference_rows(reference, len(reps))

    # One BLAS thread: after the PCA everything works on small matrices, where threads only cost (badly so on a
    # busy machine: 4-10x slower, measured), and a fixed thread count keeps the floating-point sums, hence the
    # result, the same wherever it runs.
    with threadpool_limits(limits=1, user_api="blas"):
        x = _reduce(reps, dims, seed)
        return _scan(x, labels, ref, k, seed=seed, max_iter=max_iter, min_class=min_class, threshold=threshold)


def _scan(x: np.ndarray, labels: np.ndarray, ref: np.ndarray, k: int, *, seed: int, max_iter: int, min_class: int,
          threshold: float) -> UntangleResult:
    """``x`` (the reduced rows, owned by the caller's call) is centred and whitened in place: at 1,000,000 rows each
    copy is 256 MB."""
    x -= _reference_mean(x, ref)
    s_mu, s_e = _global_model(x, labels, ref, k, max_iter)

    # Whiten by S_e: the untangling and the statistic are then Euclidean.
    chol = np.linalg.cholesky(s_e)
    for start in range(0, len(x), STATS_BLOCK):
        x[start:start + STATS_BLOCK] = np.linalg.solve(chol, x[start:start + STATS_BLOCK].T).T  # cov(rows) = I
    w = x
    s_mu_w = np.linalg.solve(chol, np.linalg.solve(chol, s_mu).T).T  # L^-1 S_mu L^-T

    statistic = np.full(k, np.nan)
    minority: dict[int, np.ndarray] = {}
    for c in range(k):
        rows = np.flatnonzero(labels == c)
        if len(rows) < max(min_class, 2):
            continue
        j, in_first = _untangle_class(w[rows], s_mu_w, np.random.default_rng([seed, c]), max_iter)
        statistic[c] = j
        small = in_first if in_first.sum() <= len(rows) / 2 else ~in_first
        minority[c] = rows[small]

    anomaly = _anomaly_index(statistic)
    targets = [c for c in range(k) if np.isfinite(anomaly[c]) and anomaly[c] > threshold]
    return UntangleResult(statistic=statistic, anomaly=anomaly, minority=minority, targets=targets,
                          threshold=float(threshold))


def _reference_rows(reference: np.ndarray | None, n: int) -> np.ndarray:
    """Row indices of the reference (all rows when none)."""
    if reference is None:
        return np.arange(n)
    ref = np.asarray(reference)
    if ref.dtype == bool:
        if ref.shape != (n,):
            raise ValueError(f"a boolean reference must have shape ({n},); got {ref.shape}")
        ref = np.flatnonzero(ref)
    elif np.issubdtype(ref.dtype, np.integer):
        ref = np.unique(ref.ravel())
        if len(ref) and (ref[0] < -n or ref[-1] >= n):
            raise ValueError("reference indices out of range")
        ref = np.unique(ref % n)
    else:
        raise ValueError("reference must be a boolean mask or an integer index array")
    if len(ref) < 2:
        raise ValueError("the reference holds fewer than two rows")
    return ref


def _reduce(reps: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """PCA to at most ``dims`` components, dropping directions without variance (centred)."""
    n, d = reps.shape
    q = min(dims, d, n - 1)
    if q < 1:
        raise ValueError("too few rows or dimensions")
    if n <= PCA_FIT_MAX:
        full = np.asarray(reps, dtype=np.float64)
        pca = PCA(n_components=q, random_state=seed).fit(full)
        return pca.transform(full)[:, _varying(pca)]
    # fitted on a seeded sample (the components of a few hundred thousand rows are those of all), projected in blocks
    sample = np.sort(np.random.default_rng(seed).choice(n, PCA_FIT_MAX, replace=False))
    pca = PCA(n_components=q, random_state=seed).fit(np.asarray(reps[sample], dtype=np.float64))
    keep = _varying(pca)
    out = np.empty((n, int(keep.sum())))
    for start in range(0, n, PCA_BLOCK):
        out[start:start + PCA_BLOCK] = pca.transform(np.asarray(reps[start:start + PCA_BLOCK], dtype=np.float64))[:, keep]
    return out


def _varying(pca: PCA) -> np.ndarray:
    var = pca.explained_variance_
    keep = var > max(var.max(), 1e-300) * 1e-9
    if not keep.any():
        raise ValueError("the representations do not vary")
    return keep


def _shrink(cov: np.ndarray) -> np.ndarray:
    """Symmetrise and shrink towards (trace / p) * I so that the matrix is positive definite."""
    cov = (cov + cov.T) / 2
    p = len(cov)
    scale = max(np.trace(cov) / p, 1e-12)
    return (1 - SHRINK) * cov + SHRINK * scale * np.eye(p)


def _reference_mean(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    total = np.zeros(x.shape[1])
    for start in range(0, len(ref), STATS_BLOCK):
        total += x[ref[start:start + STATS_BLOCK]].sum(axis=0)
    return total / len(ref)


def _global_model(x: np.ndarray, labels: np.ndarray, ref: np.ndarray, k: int,
                  max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """EM estimate of (S_mu, S_e) from the reference rows ``ref`` of ``x`` (centred) and their ``labels``.

    E-step: each class's identity is its posterior mean ``S_mu (S_e + n_c S_mu)^-1 sum_c x``; M-step: S_mu is the
    sample-weighted covariance of the identities, S_e that of the residuals ``x - mu_class``. Both steps need only
    each class's count, sum and scatter matrix, accumulated over blocks of reference rows.
    """
    n = len(ref)
    counts = np.bincount(labels[ref], minlength=k).astype(np.float64)
    present = np.flatnonzero(counts > 0)
    if len(present) < 2:
        raise ValueError("the reference must hold at least two classes")
    counts = counts[present]
    sums, scatter = np.zeros((len(present), x.shape[1])), np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, n, STATS_BLOCK):
        rows = ref[start:start + STATS_BLOCK]
        block, block_labels = x[rows], labels[rows]
        sums += np.stack([block[block_labels == c].sum(axis=0) for c in present])  # (L, p)
        scatter += block.T @ block  # sum over the rows of x x'

    def covariances(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        weighted_mean = counts @ mu / n
        s_mu = (mu.T * counts) @ mu / n - np.outer(weighted_mean, weighted_mean)
        cross = sums.T @ mu  # sum_c s_c mu_c'
        # sum_i (x_i - mu_ci)(x_i - mu_ci)' = X'X - sum_c (s_c mu_c' + mu_c s_c') + sum_c n_c mu_c mu_c'
        resid = scatter - cross - cross.T + (mu.T * counts) @ mu
        e_mean = (sums.sum(axis=0) - counts @ mu) / n
        s_e = resid / n - np.outer(e_mean, e_mean)
        return _shrink(s_mu), _shrink(s_e)

    s_mu, s_e = covariances(sums / counts[:, None])  # start from the class means
    for _ in range(max_iter):
        mu = np.stack([s_mu @ np.linalg.solve(s_e + cnt * s_mu, s) for cnt, s in zip(counts, sums)])
        new_mu, new_e = covariances(mu)
        change = (np.linalg.norm(new_mu - s_mu) + np.linalg.norm(new_e - s_e)) / (
            np.linalg.norm(s_mu) + np.linalg.norm(s_e))
        s_mu, s_e = new_mu, new_e
        if change < 1e-7:
            break
    return s_mu, s_e


def _untangle_class(y: np.ndarray, s_mu: np.ndarray, rng: np.random.Generator,
                    max_iter: int) -> tuple[float, np.ndarray]:
    """Best two-subgroup split of one class's whitened rows ``y``; returns (J, membership of subgroup 1)."""
    n, p = y.shape
    total = y.sum(axis=0)
    # One-subgroup hypothesis: the class identity's posterior mean under the global model (whitened: S_e = I).
    mu = s_mu @ np.linalg.solve(np.eye(p) + n * s_mu, total)
    sq = np.einsum("ij,ij->i", y, y)

    # the class's first principal direction, from its p x p scatter: an SVD of the rows would hold two more copies
    mean = total / n
    _, vectors = np.linalg.eigh(y.T @ y - n * np.outer(mean, mean))
    starts = [y @ vectors[:, -1] > mean @ vectors[:, -1]]
    for _ in range(RESTARTS):
        first = y[rng.integers(n)]
        d2 = np.maximum(sq - 2 * (y @ first) + first @ first, 0.0)  # |y - first|^2 without an (n, p) difference
        second = y[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else first
        starts.append(y @ (first - second) > (first @ first - second @ second) / 2)

    best_j, best_z = -np.inf, starts[0]
    for z in starts:
        z = _lloyd(y, z, max_iter)
        n1 = int(z.sum())
        if n1 in (0, n):
            j = 0.0
        else:
            u1, u2 = y[z].mean(axis=0), y[~z].mean(axis=0)
            # mean over rows of |y - mu|^2 - |y - u_z|^2
            resid_two = sq[z].sum() - 2 * y[z].sum(axis=0) @ u1 + n1 * u1 @ u1
            resid_two += sq[~z].sum() - 2 * y[~z].sum(axis=0) @ u2 + (n - n1) * u2 @ u2
            resid_one = sq.sum() - 2 * total @ mu + n * mu @ mu
            j = float((resid_one - resid_two) / n)
        if j > best_j:
            best_j, best_z = j, z
    return best_j, best_z


def _lloyd(y: np.ndarray, z: np.ndarray, max_iter: int) -> np.ndarray:
    """Alternate subgroup means and nearest-mean assignment (Euclidean: the rows are S_e-whitened)."""
    n = len(z)
    total = y.sum(axis=0)
    for _ in range(max_iter):
        n1 = int(z.sum())
        if n1 in (0, n):
            break
        s1 = z.astype(np.float64) @ y
        u1, u2 = s1 / n1, (total - s1) / (n - n1)
        new = y @ (u1 - u2) > (u1 @ u1 - u2 @ u2) / 2
        if np.array_equal(new, z):
            break
        z = new
    return z


def _anomaly_index(statistic: np.ndarray) -> np.ndarray:
    """Signed robust z-score (J - median) / (1.4826 MAD) over the finite entries; nan elsewhere."""
    out = np.full(len(statistic), np.nan)
    ok = np.isfinite(statistic)
    if not ok.any():
        return out
    v = statistic[ok]
    med, scale = centre_and_spread(v)
    dev = v - med
    if scale <= 1e-12 * max(abs(med), 1e-300):
        # Half or more of the classes share one value: fall back on the mean absolute deviation (normal-consistent).
        scale = math.sqrt(math.pi / 2) * np.mean(np.abs(dev))
    out[ok] = dev / scale if scale > 1e-12 * max(abs(med), 1e-300) else 0.0
    return out
