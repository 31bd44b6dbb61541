"""Manual parity check of canon.compat against equiadapt 0.1.2 itself (not run in CI).

equiadapt does not import beside the CPU torch of the project venv; run this in a
separate venv (a multi-GB CUDA build of torch, run on the CPU):

    python3 -m venv /tmp/eqvenv
    /tmp/eqvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/eqvenv/bin/pip install equiadapt==0.1.2 kornia omegaconf
    PYTHONPATH=. /tmp/eqvenv/bin/python tests/manual/equiadapt_parity.py

Same network weights and reference vector in both; prints, per setting, the largest
difference of the orbit views, the group activations, the canonical images and the
losses, and the share of samples with the same chosen element; then the inversion of
regular and scalar features for every element, which must match equiadapt's on C_n.
"""

import torch
from equiadapt.images.canonicalization.discrete_group import OptimizedGroupEquivariantImageCanonicalization as Theirs
from omegaconf import OmegaConf

from canon.compat import OptimizedGroupEquivariantImageCanonicalization as Ours
from canon.networks import ConvEncoder


class Net(ConvEncoder):
    @property
    def out_vector_size(self):
        return self.out_dim


def run(in_shape, group_type, n, crop=0.8, rs=32, B=16, seed=0, tol=1e-4):
    """The layer's activations, choices and losses against equiadapt's on smooth images, and
    ``group_augment`` on equiadapt's own input. Where the two layers see the same views (grayscale
    inputs: no crop; colour inputs at quarter turns) the activations must agree within ``tol`` and every
    choice must be the same; colour views at other angles differ on purpose at their corners
    (difference 3 of ``canon.compat``: the real image, not the edge-replicated crop), so there only
    the difference is printed."""
    torch.manual_seed(seed)
    hp = OmegaConf.create(
        dict(
            beta=1.0,
            input_crop_ratio=crop,
            resize_shape=rs,
            group_type=group_type,
            num_rotations=n,
            artifact_err_wt=0,
            learn_ref_vec=False,
        )
    )
    net = Net(in_shape[0], out_dim=32, hidden=16)
    theirs, ours = Theirs(net, hp, in_shape).eval(), Ours(net, hp, in_shape).eval()
    ours.reference_vector.data.copy_(theirs.reference_vector.data)
    # smooth-ish random images (a few Gaussian blobs) so resampling differences stay small
    C, H, W = in_shape
    yy, xx = torch.meshgrid(torch.arange(H) - (H - 1) / 2, torch.arange(W) - (W - 1) / 2, indexing="ij")
    x = torch.zeros(B, C, H, W)
    for _ in range(4):
        cx, cy = (torch.rand(B, C, 1, 1) - 0.5) * W * 0.6, (torch.rand(B, C, 1, 1) - 0.5) * H * 0.6
        s = 2 + torch.rand(B, C, 1, 1) * H / 6
        x += torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s**2))
    with torch.no_grad():
        theirs.device = x.device
        xt, xo = theirs(x), ours(x)
        at, ao = (
            theirs.canonicalization_info_dict["group_activations"],
            ours.canonicalization_info_dict["group_activations"],
        )
        small = theirs.transformations_before_canonicalization_network_forward(x)
        vt, vo = theirs.group_augment(small), ours.group_augment(small)  # both on equiadapt's input
        same = (at.argmax(-1) == ao.argmax(-1)).float().mean().item()
        agree = at.argmax(-1) == ao.argmax(-1)
        rot_only = agree & (
            ao.argmax(-1) < n
        )  # equiadapt's reflected canonical image differs on purpose (docs/spec.md §6.1)
        img = (xt - xo)[rot_only].abs().max().item() if rot_only.any() else float("nan")
        lt, lo = theirs.get_optimization_specific_loss().item(), ours.get_optimization_specific_loss().item()
        pt, po = theirs.get_prior_regularization_loss().item(), ours.get_prior_regularization_loss().item()
        it, io = theirs.get_identity_metric().item(), ours.get_identity_metric().item()
    print(
        f"{str(in_shape):13s} {group_type:15s} N={n:2d}: |views|max={(vt - vo).abs().max().item():.2e} "
        f"|acts|max={(at - ao).abs().max().item():.2e} same_argmax={same:.3f} |canon img|max(rotations)={img:.2e} "
        f"loss {lt:.5f}/{lo:.5f} prior {pt:.5f}/{po:.5f} identity {it:.3f}/{io:.3f}"
    )
    views = (vt - vo).abs().max().item()
    assert views <= tol, f"group_augment differs from equiadapt's by {views:.3g} > {tol}"
    if in_shape[0] == 1 or n == 4:
        acts = (at - ao).abs().max().item()
        assert acts <= tol and same == 1.0, f"activations differ by {acts:.3g}, same choice {same:.3f}"
        assert abs(lt - lo) <= tol and abs(pt - po) <= tol, "losses differ from equiadapt's"


def regular_inversion(in_shape, group_type, n, tol=1e-4):
    """invert_canonicalization of regular (and scalar) features, every element chosen once: C_n must
    equal equiadapt's result within ``tol``; on D_n equiadapt's is not the regular action
    (docs/spec.md §6.6), so only the difference is printed."""
    hp = OmegaConf.create(
        dict(beta=1.0, input_crop_ratio=1.0, resize_shape=in_shape[-1], group_type=group_type, num_rotations=n,
             artifact_err_wt=0, learn_ref_vec=False)
    )  # fmt: skip
    net = Net(in_shape[0], out_dim=8, hidden=8)
    theirs, ours = Theirs(net, hp, in_shape).eval(), Ours(net, hp, in_shape).eval()
    G = ours.num_group
    acts = torch.eye(G)  # sample b chooses element b
    theirs.device = acts.device
    theirs.canonicalization_info_dict = {"group_element": theirs.groupactivations_to_groupelement(acts)}
    ours.canonicalization_info_dict = {"group_activations": acts}
    ours.groupactivations_to_groupelement(acts)
    y = torch.randn(G, 2 * G, *in_shape[1:])
    diffs = {}
    for kind in ("regular", "scalar"):
        t = theirs.invert_canonicalization(y, induced_rep_type=kind)
        o = ours.invert_canonicalization(y, induced_rep_type=kind)
        diffs[kind] = [(t[b] - o[b]).abs().max().item() for b in range(G)]
    shown = {k: " ".join(f"{d:.1e}" for d in v) for k, v in diffs.items()}
    print(f"{str(in_shape):13s} {group_type:15s} N={n:2d}: invert |ours − equiadapt| per element: {shown}")
    if group_type == "rotation":
        worst = max(max(d) for d in diffs.values())
        assert worst <= tol, f"regular/scalar inversion differs from equiadapt by {worst:.3g} > {tol}"


def names_and_transforms(in_shape=(3, 40, 40), n=4, tol=1e-5):
    """Every public name of equiadapt's layer (class and instance attributes) exists on the drop-in, and
    its transforms (pad, crops, resize, rotate_and_maybe_reflect, group_augment) give equiadapt's values."""
    hp = OmegaConf.create(
        dict(beta=1.0, input_crop_ratio=0.8, resize_shape=24, group_type="roto-reflection", num_rotations=n,
             artifact_err_wt=0, learn_ref_vec=False)
    )  # fmt: skip
    net = Net(in_shape[0], out_dim=8, hidden=8)
    theirs, ours = Theirs(net, hp, in_shape), Ours(net, hp, in_shape)
    public = {k for k in [*dir(theirs), *vars(theirs)] if not k.startswith("_")} - set(dir(torch.nn.Module))
    missing = sorted(k for k in public if not hasattr(ours, k))
    x = torch.rand(2, *in_shape)
    theirs.device = x.device
    small_t = theirs.transformations_before_canonicalization_network_forward(x)
    small_o = ours.transformations_before_canonicalization_network_forward(x)
    diffs = {
        "pad": (theirs.pad(x) - ours.pad(x)).abs().max().item(),
        "crop": (theirs.crop(theirs.pad(x)) - ours.crop(ours.pad(x))).abs().max().item(),
        "crop_canonization": (theirs.crop_canonization(x) - ours.crop_canonization(x)).abs().max().item(),
        "transformations_before": (small_t - small_o).abs().max().item(),
        "group_augment (90° steps)": (theirs.group_augment(small_t) - ours.group_augment(small_t)).abs().max().item(),
    }
    print(f"{str(in_shape):13s} public names missing from the drop-in: {missing}; |Δ|: {diffs}")
    assert not missing and max(diffs.values()) <= tol, "the drop-in differs from equiadapt"


def antialias_parity(n=4, tol=1e-5):
    """equiadapt's own test setting, 3×64×64 noise images, crop 0.9 → 32: the drop-in's antialiased views
    against equiadapt's (torchvision-resized then rotated) ones, and the share of the same element."""
    for aa in (True, False):
        torch.manual_seed(0)
        hp = OmegaConf.create(
            dict(beta=1.0, input_crop_ratio=0.9, resize_shape=32, group_type="rotation", num_rotations=n,
                 artifact_err_wt=0, learn_ref_vec=False, antialias=aa)
        )  # fmt: skip
        net = Net(3, out_dim=32, hidden=16)
        theirs, ours = Theirs(net, hp, (3, 64, 64)).eval(), Ours(net, hp, (3, 64, 64)).eval()
        ours.reference_vector.data.copy_(theirs.reference_vector.data)
        x = torch.rand(64, 3, 64, 64)
        with torch.no_grad():
            theirs.device = x.device
            vt = theirs.group_augment(theirs.transformations_before_canonicalization_network_forward(x))
            vo = ours._views(x).transpose(0, 1).flatten(0, 1)
            same = (theirs.get_group_activations(x).argmax(-1) == ours.get_group_activations(x).argmax(-1)).float()
        d = (vt - vo).abs()
        inner = d[..., 2:-2, 2:-2].max().item()
        print(
            f"C{n} 3×64×64 noise, antialias={aa}: |Δ views| {d.max():.3f} (interior {inner:.2e}), "
            f"same element {same.mean():.3f}"
        )
        if aa and n == 4:
            assert inner <= tol, "antialiased quarter-turn views differ from equiadapt's inside the crop"


if __name__ == "__main__":
    names_and_transforms()
    antialias_parity(4)
    antialias_parity(8)
    for shape in [(1, 28, 28), (3, 40, 40)]:
        for gt, n in [("rotation", 4), ("rotation", 8), ("roto-reflection", 4)]:
            run(shape, gt, n)
            regular_inversion(shape, gt, n)
