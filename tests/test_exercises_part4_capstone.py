"""exercises/part4_capstone.py: the checks accept right answers written differently, fall back on a stub, and
reject plausible wrong answers with their hints (values and, for the loss, gradients)."""
import torch
import torch.nn.functional as F

from minirlhf import exercises as ex
from minirlhf.losses import bradley_terry_loss
from minirlhf.ratings import within_user_pairs
from conftest import assert_check_behaves


def z_loop(stars, users):
    out = torch.zeros_like(stars)
    for u in users.unique():
        rows = users == u
        s = stars[rows]
        if rows.sum() > 1 and s.std(unbiased=False) > 0:
            out[rows] = (s - s.mean()) / s.std(unbiased=False)
    return out


def z_scatter(stars, users):            # right, vectorised with index_add
    ids, inverse = users.unique(return_inverse=True)
    n = torch.zeros(len(ids)).index_add_(0, inverse, torch.ones_like(stars))
    mean = torch.zeros(len(ids)).index_add_(0, inverse, stars) / n
    var = torch.zeros(len(ids)).index_add_(0, inverse, (stars - mean[inverse]) ** 2) / n
    std = var.sqrt()[inverse]
    return torch.where((n[inverse] > 1) & (std > 0), (stars - mean[inverse]) / std.clamp(min=1e-12), torch.zeros_like(stars))


def centred_only(stars, users):         # wrong: the user's mean removed, not their spread
    out = torch.zeros_like(stars)
    for u in users.unique():
        rows = users == u
        if rows.sum() > 1:
            out[rows] = stars[rows] - stars[rows].mean()
    return out


def test_normalize_per_user_check(capsys):
    wrongs = [
        (lambda s, u: (s - s.mean()) / s.std(unbiased=False), "over all the ratings at once"),
        (centred_only, "did not divide by their std"),
        (lambda s, u: z_loop(s, u) * torch.stack([(((u == v).sum() - 1) / (u == v).sum()).sqrt() for v in u]),
         "sample std"),
        (lambda s, u: (s - torch.stack([s[u == v].mean() for v in u])) / torch.stack([s[u == v].std(unbiased=False) for v in u]),
         "nan or inf"),
        (lambda s, u: z_loop(s, u).tolist(), "list"),
    ]
    assert_check_behaves(ex.check_normalize_per_user, [z_loop, z_scatter], wrongs, capsys)


def pairs_loss_matrix(r, s, u, p):
    same = (u[:, None] == u[None]) & (p[:, None] == p[None]) & (s[:, None] > s[None])
    if not same.any():
        return r.sum() * 0
    return -F.logsigmoid((r[:, None] - r[None])[same]).mean()


def pairs_loss_loop(r, s, u, p):        # right: explicit pairs through the package's Bradley-Terry loss
    pairs = [(a, b) for a in range(len(r)) for b in range(len(r)) if u[a] == u[b] and p[a] == p[b] and s[a] > s[b]]
    if not pairs:
        return (r * 0).sum()
    i, j = zip(*pairs)
    return bradley_terry_loss(r[list(i)], r[list(j)])


def test_rating_pairs_loss_check(capsys):
    def same(r, s, u, p, **kw):
        return pairs_loss_matrix(r, s, torch.zeros_like(u) if kw.get("users") else u,
                                 torch.zeros_like(p) if kw.get("prompts") else p)
    wrongs = [
        (lambda r, s, u, p: same(r, s, u, p, users=True), "different users"),
        (lambda r, s, u, p: same(r, s, u, p, prompts=True), "different prompts"),
        (lambda r, s, u, p: pairs_loss_matrix(-r, s, u, p), "sign is flipped"),
        (lambda r, s, u, p: -torch.log(torch.sigmoid((r[:, None] - r[None])[(u[:, None] == u[None]) & (p[:, None] == p[None])
                                                                        & (s[:, None] > s[None])])).mean(), "nan or inf"),
        (lambda r, s, u, p: pairs_loss_matrix(r.detach(), s, u, p) + 0 * r.sum(), "gradient"),
        (lambda r, s, u, p: pairs_loss_matrix(r, s, u, p).item(), "float|tensor"),
    ]
    assert_check_behaves(ex.check_rating_pairs_loss, [pairs_loss_matrix, pairs_loss_loop], wrongs, capsys)


def test_the_loss_is_bradley_terry_on_the_packages_within_user_pairs():
    """The exercise's loss over ratings equals Bradley-Terry over ratings.within_user_pairs (what support-rm trains on)."""
    g = torch.Generator().manual_seed(0)
    users, prompts = torch.randint(0, 6, (50,), generator=g), torch.randint(0, 3, (50,), generator=g)
    stars, r = torch.randint(1, 6, (50,), generator=g), torch.randn(50, generator=g)
    rows = [{"user": int(u), "prompt": int(p), "response": k, "stars": int(s)}
            for k, (u, p, s) in enumerate(zip(users, prompts, stars))]
    pairs = within_user_pairs(rows)
    expected = bradley_terry_loss(r[[q["chosen"] for q in pairs]], r[[q["rejected"] for q in pairs]])
    assert torch.allclose(pairs_loss_matrix(r, stars.float(), users, prompts), expected)
