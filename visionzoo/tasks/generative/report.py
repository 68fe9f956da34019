"""The generative report: one self-contained HTML file per autoencoder, VAE or GAN, with the kind's headline
metrics (PSNR; ELBO / NLL / bits per dim; FID / KID through a named feature extractor), reconstructions,
samples, latent interpolations and per-dimension traversals, a 2-D projection of the latent codes, the
training log, the fixed-noise grids saved after every epoch, and run information.

:func:`progress_grid` is the per-epoch image the task's `after_epoch` saves (run_dir/progress/epoch_NNN.png);
:func:`slerp` is reusable on its own. Everything here runs the model in eval mode without gradients, with
explicit, seeded random generators (cfg.eval.seed), and leaves the global random state untouched.
"""
from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torchvision.utils import make_grid

from visionzoo.models.utils import unwrap
from visionzoo.reports.figures import new_figure
from visionzoo.reports.html import HtmlReport, add_run_info, add_training_curves, escape, format_value

__all__ = ["build_generative_report", "progress_grid", "slerp"]

GRID_COLUMNS = 8          # columns of the progress grid and the sample grid
RECON_IMAGES = 16         # images in the reconstruction rows (and the autoencoders' progress grid)
INTERP_ROWS, INTERP_STEPS = 4, 10
TRAVERSAL_DIMS, TRAVERSAL_STEPS = 8, 9
AE_TRAVERSAL_STD = 3.0    # autoencoders / VAEs: offsets -3..3 aggregate standard deviations
GAN_TRAVERSAL_RANGE = 2.5  # GANs: one z dim set to -2.5..2.5 (prior units)
GAN_SENSITIVITY_DIMS = 128  # GAN traversals rank at most this many z dims by how much they move the output
CLASS_SAMPLES = 10        # samples per class row of a conditional model
PROJECTION_IMAGES = 1000  # evaluation images encoded for the latent-space projection
PROGRESS_SHOWN = 8        # per-epoch grids shown (evenly spaced, the last always)
MAX_BATCH = 256
_GAN_VAL_KEYS = ("fid", "kid", "kid_std")  # scores that must name their feature extractor

_CLASS_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"]
# pytorch-fid's published FID-Inception file, as features.InceptionFeatures names it
_PUBLISHED_INCEPTION = "pytorch-fid FID-Inception, TF inception-2015-12-05 port"
_WARNING_STYLE = ("border:1px solid #d1242f;border-left-width:6px;background:#ffebe9;color:#82071e;"
                  "border-radius:8px;padding:10px 14px;margin:6px 0 12px")


# ---- helpers --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _inference(model: torch.nn.Module, seed: int):
    """Eval mode, no gradients, and the global CPU random state seeded with `seed` inside and restored
    afterwards (dataset items draw noise seeds, and training sets their augmentation, from it); the model's
    previous mode is restored too."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        model.train(was_training)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _eval_cfg(cfg, key: str, default):
    value = getattr(getattr(cfg, "eval", None), key, None)
    return default if value is None else value


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device).manual_seed(int(seed))


def _conditional(model) -> bool:
    return getattr(model, "num_classes", None) is not None


def _unit(model, images: torch.Tensor) -> torch.Tensor:
    """Model output in [0, 1] on the CPU (GANs make [-1, 1] images)."""
    if getattr(model, "data_range", "unit") == "symmetric":
        images = images * 0.5 + 0.5
    return images.detach().float().cpu().clamp(0, 1)


def _to_pil(grid: torch.Tensor) -> Image.Image:
    array = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def _grid_image(images: torch.Tensor, columns: int) -> Image.Image:
    """(N, C, H, W) images in [0, 1] as one RGB grid image, `columns` wide, 2-px white gaps."""
    return _to_pil(make_grid(images.float().cpu().clamp(0, 1), nrow=columns, padding=2, pad_value=1.0))


def _class_name(classes: Sequence[str], k: int) -> str:
    return str(classes[k]) if 0 <= k < len(classes) else f"class {k}"


def _load(dataset, indices: Sequence[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in the model's range on `device`, labels (N,) on `device`) of dataset items `indices`."""
    items = [dataset[i] for i in indices]
    x = torch.stack([item[0] for item in items]).to(device)
    y = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long, device=device)
    return x, y


def _batches(n: int, size: int = MAX_BATCH):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _cycled_labels(model, n: int, device) -> torch.Tensor | None:
    return torch.arange(n, device=device) % model.num_classes if _conditional(model) else None


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents `a` and `b` (D,) at fractions `t` (T,) -> (T, D); linear when
    the two are (nearly) parallel. Keeps Gaussian latents at a typical norm, unlike linear interpolation."""
    a64, b64, t64 = a.double(), b.double(), t.double().to(a.device)
    cos = torch.dot(a64 / a64.norm().clamp_min(1e-12), b64 / b64.norm().clamp_min(1e-12)).clamp(-1, 1)
    omega = torch.arccos(cos)
    if float(torch.sin(omega)) < 1e-6:
        out = (1 - t64)[:, None] * a64 + t64[:, None] * b64
    else:
        out = (torch.sin((1 - t64) * omega)[:, None] * a64 + torch.sin(t64 * omega)[:, None] * b64) / torch.sin(omega)
    return out.to(a.dtype)


def _rows_figure(rows: Sequence[tuple[str, torch.Tensor]], column_labels: Sequence[str] | None = None) -> Figure:
    """One strip of images per row (label on the left), all with the same number of columns."""
    columns = max(r[1].shape[0] for r in rows)
    _, _, h, w = rows[0][1].shape
    cell = min(0.8, 9.0 / columns)  # inches per image
    fig = new_figure(columns * cell + 1.9, len(rows) * cell * h / w + (0.35 if column_labels else 0.1))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for i, (ax, (label, images)) in enumerate(zip(axes, rows)):
        if images.shape[0] < columns:  # pad short rows with white cells so the columns line up
            pad = torch.ones((columns - images.shape[0], *images.shape[1:]), dtype=images.dtype)
            images = torch.cat([images.float().cpu(), pad])
        strip = make_grid(images.float().cpu().clamp(0, 1), nrow=columns, padding=2, pad_value=1.0)
        ax.imshow(strip.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        if i == 0 and column_labels:
            centers = [2 + k * (w + 2) + w / 2 - 0.5 for k in range(len(column_labels))]
            ax.xaxis.tick_top()
            ax.set_xticks(centers, list(column_labels), fontsize=7)
            ax.tick_params(length=0, pad=2)
        else:
            ax.set_xticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    return fig


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "\u2014"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}" if isinstance(value, float) else format_value(value)
    return str(value)


def _short_extractor(name: str | None) -> str:
    return name.split(" (")[0] if name else "unknown extractor"


def _comparable_to_published(name: str | None) -> bool:
    return bool(name) and _PUBLISHED_INCEPTION in name and "not the published" not in name


# ---- what each kind of model shows differently -------------------------------------------------------
class _AutoencoderView:
    """What one kind of generative model (`model.kind`) shows in its report; the sections ask the view of
    their model's kind (`_VIEWS`) rather than testing the kind. This base is the autoencoder's: an encoder
    and a decoder, no prior to sample from."""

    # the image sections, in order: a GAN has no encoder (nothing to reconstruct or project), an
    # autoencoder no prior to sample from
    sections: tuple[str, ...] = ("reconstructions", "interpolation", "traversals", "projection")
    codes = "codes z = encode(x)"  # what interpolations and traversals start from
    projected_codes = "codes z = encode(x) of the clean images"
    sample_note = ""  # appended to the Samples captions (an autoencoder has none)

    def title(self, model) -> str:
        return "Denoising autoencoder" if getattr(model, "corruption", None) else "Autoencoder"

    # -- the model --
    def encode(self, model, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latent codes of images `x` in [0, 1]: (z, None), the codes of the clean images."""
        return torch.cat([model.encode(x[s]) for s in _batches(x.shape[0])]), None

    def decode(self, model, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Images in [0, 1] (CPU) from latents `z`; `y` (labels) reaches conditional models only."""
        return _unit(model, model.decode(z))

    def latents(self, model, n: int, g: torch.Generator) -> torch.Tensor:
        return torch.randn((n, model.latent_dim), generator=g, device=_device(model))

    def reconstruction_rows(self, model, x: torch.Tensor, y: torch.Tensor, g) -> list[tuple[str, torch.Tensor]]:
        """The rows between input and output (the corrupted input of a denoising autoencoder), and the output."""
        x_in = model.corrupt(x, generator=g)
        rows = [(f"corrupted ({model.corruption})", _unit(model, x_in))] if getattr(model, "corruption", None) else []
        return rows + [("output", _unit(model, model.reconstruct(x_in)))]

    def reconstruction_caption(self, model, seed: int) -> str:
        if getattr(model, "corruption", None):
            return (f"the reconstruction of the corrupted input ({model.corruption} corruption, fixed generator "
                    f"seeded with eval.seed = {seed})")
        return "decode(encode(input))"

    # -- the summary --
    def summary(self, report: HtmlReport, model, metrics: Mapping) -> None:
        stats: list[tuple[str, Any]] = [("PSNR (dB)", _fmt(metrics.get("psnr"))), ("MSE", _fmt(metrics.get("mse")))]
        if metrics.get("psnr_corrupted") is not None:
            gain = metrics.get("psnr_gain")
            stats += [("PSNR of the corrupted input (dB)", _fmt(metrics.get("psnr_corrupted"))),
                      ("PSNR gain (dB)", "\u2014" if gain is None else f"{gain:+.3f}")]
        if metrics.get("num_images") is not None:
            stats.append(("images", int(metrics["num_images"])))
        report.add_stats(stats)
        text = ("PSNR = 10 log10(1 / MSE) per image, averaged over images; MSE per pixel, images in [0, 1].")
        if getattr(model, "corruption", None):
            detail = (f"noise std {model.noise_std}" if model.corruption == "gaussian"
                      else f"mask fraction {model.mask_fraction}")
            text += (f" Denoising: the model reconstructs the clean image from a corrupted one ({model.corruption}, "
                     f"{detail}; fixed noise per image); the PSNR of the corrupted input itself is the baseline "
                     "the gain is measured against.")
        report.add_html(f'<p class="caption">{escape(text)}</p>')

    def shown_metrics(self, metrics: Mapping) -> dict:
        """The "All metrics" table."""
        return {k: v for k, v in metrics.items() if k != "warnings"}

    # -- latent sections --
    def interpolation(self, report: HtmlReport, model, x: torch.Tensor, y: torch.Tensor, seed: int,
                      classes: Sequence[str]) -> None:
        """Linear interpolation between the codes of pairs of evaluation images."""
        device = _device(model)
        t = torch.linspace(0, 1, INTERP_STEPS, device=device)
        pool = min(x.shape[0], 64)
        pairs = _pairs(y[:pool].tolist(), INTERP_ROWS, same_class=_conditional(model))
        if not pairs:
            report.add_note("Interpolation needs at least two evaluation images.")
            return
        index = torch.tensor([i for pair in pairs for i in pair], device=device)
        codes, _ = self.encode(model, x[index], y[index], seed)
        paths = torch.cat([(1 - t)[:, None] * codes[2 * r] + t[:, None] * codes[2 * r + 1]
                           for r in range(len(pairs))])
        decoded = self.decode(model, paths, y[index[0::2]].repeat_interleave(INTERP_STEPS)).split(INTERP_STEPS)
        rows = []
        for r, (i, j) in enumerate(pairs):
            ends = _unit(model, x[[i, j]])
            rows.append((f"#{i} {_class_name(classes, int(y[i]))} \u2192 #{j} {_class_name(classes, int(y[j]))}",
                         torch.cat([ends[:1], decoded[r], ends[1:]])))
        caption = (f"Linear interpolation between the {self.codes} of pairs of evaluation images, decoded at "
                   f"{INTERP_STEPS} evenly spaced t; the first and last columns are the two input images. "
                   + ("Conditional model: pairs of the same class, decoded with that class." if _conditional(model)
                      else "Pairs of different classes where possible."))
        column_labels = [f"{v:.2g}" for v in t.tolist()]
        report.add_figure(None, _rows_figure(rows, ["input"] + column_labels + ["input"]), caption=caption)

    def traversal_axes(self, codes: torch.Tensor, logvar: torch.Tensor | None, dims: int):
        """(scale per dimension, the dimensions shown, their row labels, how they were ranked, the offsets'
        unit, what the traversal starts from)."""
        scale = codes.std(0, unbiased=False) if codes.shape[0] > 1 else torch.ones_like(codes[0])
        order = torch.argsort(scale, descending=True)[:dims].tolist()
        labels = {d: f"z{d} (std {float(scale[d]):.2g})" for d in order}
        return (scale, order, labels, "the dimensions whose codes vary most across the evaluation images",
                "standard deviations of that dimension over the evaluation images' codes", "code")

    def traversals(self, report: HtmlReport, model, x: torch.Tensor, y: torch.Tensor, seed: int,
                   classes: Sequence[str], dims: int) -> None:
        """One latent dimension varied at a time around the code of evaluation image #0."""
        if x.shape[0] == 0:
            report.add_note("No evaluation images to encode.")
            return
        codes, logvar = self.encode(model, x, y, seed)
        scale, order, labels, rank, unit, base = self.traversal_axes(codes, logvar, dims)
        offsets = torch.linspace(-AE_TRAVERSAL_STD, AE_TRAVERSAL_STD, TRAVERSAL_STEPS, device=_device(model))
        z0 = codes[0]
        z = z0.repeat(len(order) * TRAVERSAL_STEPS, 1)
        for r, d in enumerate(order):
            z[r * TRAVERSAL_STEPS:(r + 1) * TRAVERSAL_STEPS, d] = z0[d] + offsets * scale[d]
        images = self.decode(model, z, y[:1].expand(z.shape[0])).split(TRAVERSAL_STEPS)
        rows = [(labels[d], images[r]) for r, d in enumerate(order)]
        cond = f" (decoded with its class, {_class_name(classes, int(y[0]))})" if _conditional(model) else ""
        report.add_figure(None, _rows_figure(rows, [f"{v:+.3g}\u03c3" for v in offsets.tolist()]),
                          caption=f"One latent dimension varied at a time around the {base} of evaluation image #0"
                                  f"{cond}, the others held fixed; rows: {rank}; columns: offsets in {unit}.")

    # -- training --
    def curves(self, report: HtmlReport, records: list[dict], metrics: Mapping) -> None:
        add_training_curves(report, records)

    def progress_images(self, model, dataset, cfg, seed: int) -> torch.Tensor:
        """The per-epoch grid's images: the first 16 dataset images in bands of 8 columns, one row per
        reconstruction row (input, corrupted input of a denoising autoencoder, output)."""
        n = min(RECON_IMAGES, len(dataset))
        if n == 0:
            raise ValueError("progress_grid: the dataset is empty")
        x, y = _load(dataset, range(n), _device(model))
        rows = [images for _, images in _reconstruction_rows(self, model, x, y, seed)]
        bands = []
        for start in range(0, n, GRID_COLUMNS):
            for images in rows:
                band = images[start:start + GRID_COLUMNS]
                if band.shape[0] < GRID_COLUMNS:
                    band = torch.cat([band, torch.ones((GRID_COLUMNS - band.shape[0], *band.shape[1:]))])
                bands.append(band)
        return torch.cat(bands)

    def progress_caption(self, model, seed: int) -> str:
        return ("reconstructions of the first 16 evaluation images, in bands of 8 columns: input, "
                + ("corrupted input (fixed noise), " if getattr(model, "corruption", None) else "") + "output")


class _VaeView(_AutoencoderView):
    """A VAE: an encoder giving a posterior (codes are its means), a prior to sample from, likelihoods."""

    sections = ("reconstructions", "samples", "interpolation", "traversals", "projection")
    codes = projected_codes = "posterior means \u03bc"
    sample_note = " Each sample is the decoder's mean image (no pixel noise added)."

    def title(self, model) -> str:
        return "VAE"

    def encode(self, model, x, y, seed):
        """(mu, logvar) of the data as the likelihood models it (dequantised / binarised with a fixed generator)."""
        g = _generator(seed, x.device)
        mus, logvars = [], []
        for s in _batches(x.shape[0]):
            data = model.prepare_data(x[s], generator=g)
            mu, logvar = model.encode(data, y[s] if _conditional(model) else None)
            mus.append(mu)
            logvars.append(logvar)
        return torch.cat(mus), torch.cat(logvars)

    def decode(self, model, z, y):
        return _unit(model, model.decode(z, y if _conditional(model) else None))

    def reconstruction_rows(self, model, x, y, g):
        data = model.prepare_data(x, generator=g)
        rows = [("binarised input", _unit(model, data))] if getattr(model, "likelihood", None) == "bernoulli" else []
        return rows + [("output", _unit(model, model.reconstruct(data, y if _conditional(model) else None)))]

    def reconstruction_caption(self, model, seed):
        if getattr(model, "likelihood", None) == "bernoulli":
            return ("the decoder's mean image at the posterior mean \u03bc of each image's encoding (the model "
                    "encodes the binarised image)")
        return "the decoder's mean image at the posterior mean \u03bc of each (dequantised) image's encoding"

    def summary(self, report, model, metrics):
        report.add_stats([("ELBO (nats/image)", _fmt(metrics.get("elbo"))),
                          ("reconstruction NLL", _fmt(metrics.get("recon_nll"))), ("KL", _fmt(metrics.get("kl"))),
                          ("NLL = \u2212L_k (nats/image)", _fmt(metrics.get("nll"))),
                          ("bits/dim", _fmt(metrics.get("bits_per_dim"))),
                          ("L_k samples k", _fmt(metrics.get("iwae_k"))),
                          ("images in L_k", _fmt(metrics.get("iwae_images")))])
        data = metrics.get("data")
        text = ("ELBO = \u2212(reconstruction NLL + KL) at one posterior sample per image; NLL is the negative "
                "importance-weighted bound L_k with k samples, an upper bound on the true NLL that tightens as k "
                "grows; bits/dim converts it per pixel and channel.")
        if data:
            text += f" All likelihoods are of the data as the model sees it: {data}."
        report.add_html(f'<p class="caption">{escape(text)}</p>')
        if metrics.get("nll") is None:
            report.add_note("The importance-weighted bound was not computed (no NLL / bits per dim).")

    def traversal_axes(self, codes, logvar, dims):
        kl = 0.5 * (codes.pow(2) + logvar.exp() - 1 - logvar).mean(0)
        scale = (codes.var(0, unbiased=False) + logvar.exp().mean(0)).sqrt()
        order = torch.argsort(kl, descending=True)[:dims].tolist()
        labels = {d: f"z{d} (KL {float(kl[d]):.2f})" for d in order}
        rank = ("the dimensions with the highest mean KL(q(z_d | x) || N(0, 1)) over the evaluation images (the "
                "most informative ones; KL in nats)")
        unit = "aggregate posterior standard deviations (sqrt(Var[\u03bc_d] + E[\u03c3_d\u00b2]))"
        return scale, order, labels, rank, unit, "posterior mean \u03bc"

    def progress_images(self, model, dataset, cfg, seed):
        return _fixed_noise_samples(model, int(_eval_cfg(cfg, "grid_samples", 64)), seed)

    def progress_caption(self, model, seed):
        return f"samples from the same fixed noise every epoch (eval.seed = {seed}), in eval mode"


class _GanView(_VaeView):
    """A GAN: a generator from a prior, no encoder; scores through a named feature extractor."""

    sections = ("samples", "interpolation", "traversals")
    sample_note = " Generator in eval mode (BatchNorm running statistics)."

    def title(self, model) -> str:
        return "GAN"

    def decode(self, model, z, y):
        return _unit(model, model.generator(z, y if _conditional(model) else None))

    def latents(self, model, n, g):
        return model.latents(n, g)

    def summary(self, report, model, metrics):
        extractor = metrics.get("feature_extractor")
        short = _short_extractor(extractor)
        kid, kid_std = metrics.get("kid"), metrics.get("kid_std")
        kid_text = _fmt(kid) + ("" if kid is None or kid_std is None else f" \u00b1 {_fmt(kid_std, 2)}")
        stats = [(f"FID \u00b7 {short}", _fmt(metrics.get("fid"))), (f"KID \u00b7 {short}", kid_text),
                 ("diversity ratio (generated / real)", _fmt(metrics.get("diversity_ratio")))]
        if metrics.get("num_generated") is not None:
            stats.append(("generated / real images",
                          f"{int(metrics['num_generated']):,} / {int(metrics.get('num_real') or 0):,}"))
        report.add_stats(stats)
        report.add_key_values(None, {"FID / KID feature extractor": extractor or "not recorded"})
        if _comparable_to_published(extractor):
            report.add_html('<p class="caption">Features from pytorch-fid\u2019s FID-Inception weights: FID is '
                            "comparable to published Inception FIDs computed on the same data and sample count."
                            "</p>")
        else:
            source = ("Inception-v3 weights other than pytorch-fid's published FID-Inception file (which published "
                      "FIDs use; other weights give other values)" if short.startswith("inception")
                      else f"a non-Inception feature extractor ({short})")
            report.add_note("These FID / KID scores are not comparable to published Inception FIDs: they come from "
                            f"{source}. Compare them only with scores computed through the same extractor.")
        report.add_html('<p class="caption">FID: Fr\u00e9chet distance between Gaussians fitted to the features of '
                        "real evaluation images and of as many generated samples; KID: unbiased squared MMD with a "
                        "cubic polynomial kernel, mean \u00b1 std over random subsets; diversity ratio: mean pairwise "
                        "feature distance of generated samples over that of real images (low values mean mode "
                        "collapse).</p>")

    def shown_metrics(self, metrics):
        short = _short_extractor(metrics.get("feature_extractor"))  # every FID / KID shown names its extractor
        return {(f"{k} \u00b7 {short}" if k in _GAN_VAL_KEYS else k): v
                for k, v in super().shown_metrics(metrics).items()}

    def interpolation(self, report, model, x, y, seed, classes):
        """Spherical interpolation between pairs of fixed random latents (there is no encoder)."""
        device = _device(model)
        t = torch.linspace(0, 1, INTERP_STEPS, device=device)
        z = model.latents(2 * INTERP_ROWS, _generator(seed + 1, device))
        paths = torch.cat([slerp(z[2 * r], z[2 * r + 1], t) for r in range(INTERP_ROWS)])
        labels = [f"pair {r + 1}" for r in range(INTERP_ROWS)]
        y_rows = None
        if _conditional(model):
            labels = [_class_name(classes, r % model.num_classes) for r in range(INTERP_ROWS)]
            y_rows = (torch.arange(INTERP_ROWS, device=device) % model.num_classes).repeat_interleave(INTERP_STEPS)
        rows = list(zip(labels, self.decode(model, paths, y_rows).split(INTERP_STEPS)))
        caption = (f"Spherical interpolation (slerp) between {INTERP_ROWS} pairs of fixed random latents (generator "
                   f"seeded with eval.seed + 1 = {seed + 1}); columns: fraction t of the way from the first latent "
                   "to the second." + (" Conditional model: one class per row." if _conditional(model) else ""))
        report.add_figure(None, _rows_figure(rows, [f"{v:.2g}" for v in t.tolist()]), caption=caption)

    def traversals(self, report, model, x, y, seed, classes, dims):
        """One z dimension at a time, around a fixed random latent, the most influential dimensions first."""
        device = _device(model)
        z0 = model.latents(1, _generator(seed + 2, device))[0]
        # rank z dims by how much setting them to -2.5 vs +2.5 changes the image (mean absolute pixel change)
        candidates = min(model.latent_dim, GAN_SENSITIVITY_DIMS)
        ends = z0.repeat(2 * candidates, 1)
        idx = torch.arange(candidates, device=device)
        ends[2 * idx, idx] = -GAN_TRAVERSAL_RANGE
        ends[2 * idx + 1, idx] = GAN_TRAVERSAL_RANGE
        images = torch.cat([self.decode(model, ends[s], _class_zero(model, ends[s].shape[0]))
                            for s in _batches(2 * candidates)])
        change = (images[0::2] - images[1::2]).abs().flatten(1).mean(1)
        order = torch.argsort(change, descending=True)[:dims].tolist()
        values = torch.linspace(-GAN_TRAVERSAL_RANGE, GAN_TRAVERSAL_RANGE, TRAVERSAL_STEPS, device=device)
        z = z0.repeat(len(order) * TRAVERSAL_STEPS, 1)
        for r, d in enumerate(order):
            z[r * TRAVERSAL_STEPS:(r + 1) * TRAVERSAL_STEPS, d] = values
        images = self.decode(model, z, _class_zero(model, z.shape[0])).split(TRAVERSAL_STEPS)
        rows = [(f"z{d} (\u0394 {float(change[d]):.3f})", images[r]) for r, d in enumerate(order)]
        considered = "all" if candidates == model.latent_dim else f"the first {candidates}"
        cond = f" Conditional model: class {_class_name(classes, 0)}." if _conditional(model) else ""
        report.add_figure(None, _rows_figure(rows, [f"{v:+.3g}" for v in values.tolist()]),
                          caption=f"One z dimension set to {-GAN_TRAVERSAL_RANGE}..{GAN_TRAVERSAL_RANGE} at a time, "
                                  f"the others held at a fixed random latent (generator seeded with eval.seed + 2 = "
                                  f"{seed + 2}); rows: the {len(order)} of {considered} {model.latent_dim} dimensions "
                                  "whose change from -2.5 to +2.5 moves the image most (\u0394: mean absolute pixel "
                                  f"change in [0, 1]).{cond}")

    def curves(self, report, records, metrics):
        # FID / KID get their own figure that names the extractor; the generic panels would not
        hidden = set(_GAN_VAL_KEYS) | {f"val_{k}" for k in _GAN_VAL_KEYS}
        add_training_curves(report, [{k: v for k, v in r.items() if k not in hidden} for r in records])
        _fid_curves(report, records, metrics.get("feature_extractor"))


_VIEWS = {"autoencoder": _AutoencoderView(), "vae": _VaeView(), "gan": _GanView()}


def _view(model) -> _AutoencoderView:
    try:
        return _VIEWS[model.kind]
    except (AttributeError, KeyError):
        raise ValueError(f"generative report: model kind {getattr(model, 'kind', None)!r} is not one of "
                         f"{sorted(_VIEWS)}") from None


def _class_zero(model, n: int) -> torch.Tensor | None:
    return torch.zeros(n, dtype=torch.long, device=_device(model)) if _conditional(model) else None


def _fixed_noise_samples(model, n: int, seed: int) -> torch.Tensor:
    """`n` samples in [0, 1] from the fixed noise of a generator seeded with `seed`; a conditional model's labels
    cycle over the classes (sample i has class i % num_classes)."""
    device = _device(model)
    return _unit(model, model.sample(n, _cycled_labels(model, n, device), generator=_generator(seed, device)))


def _reconstruction_rows(view: _AutoencoderView, model, x: torch.Tensor, y: torch.Tensor,
                         seed: int) -> list[tuple[str, torch.Tensor]]:
    """[(label, images in [0, 1] on the CPU)]: input, corrupted (DAE) / binarised (Bernoulli VAE), output."""
    return [("input", _unit(model, x))] + view.reconstruction_rows(model, x, y, _generator(seed, x.device))


# ---- per-epoch progress grid --------------------------------------------------------------------
def progress_grid(model, dataset, cfg) -> Image.Image:
    """The image saved after every epoch (run_dir/progress/epoch_NNN.png), 8 columns, in [0, 1].

    VAEs and GANs: `cfg.eval.grid_samples` samples from fixed noise (a generator seeded with cfg.eval.seed
    on the model's device), so the grids of successive epochs show the same latents; conditional models
    get labels cycling over the classes (sample i has class i % num_classes). Autoencoders: the first 16
    dataset images in bands of 8 columns: input row, corrupted row (denoising autoencoders, with the same
    fixed generator), reconstruction row."""
    model = unwrap(model)
    seed = int(_eval_cfg(cfg, "seed", 0))
    with _inference(model, seed):
        images = _view(model).progress_images(model, dataset, cfg, seed)
    return _grid_image(images, GRID_COLUMNS)


# ---- sections -----------------------------------------------------------------------------------
def _warnings(report: HtmlReport, metrics: Mapping) -> None:
    for message in metrics.get("warnings") or []:
        report.add_html(f'<div class="warning" role="alert" style="{_WARNING_STYLE}"><strong>Warning:</strong> '
                        f"{escape(message)}</div>")


def _summary(report: HtmlReport, view: _AutoencoderView, model, metrics: Mapping,
             model_summary: Mapping | None) -> None:
    report.add_section("Summary")
    _warnings(report, metrics)
    view.summary(report, model, metrics)
    other = view.shown_metrics(metrics)
    if other:
        report.add_key_values("All metrics", other)
    if model_summary:
        report.add_key_values("Model", dict(model_summary))


def _reconstructions(report: HtmlReport, view: _AutoencoderView, model, x: torch.Tensor, y: torch.Tensor,
                     seed: int) -> None:
    report.add_section("Reconstructions")
    if x.shape[0] == 0:
        report.add_note("No evaluation images.")
        return
    rows = _reconstruction_rows(view, model, x[:RECON_IMAGES], y[:RECON_IMAGES], seed)
    report.add_figure(None, _rows_figure(rows), caption=f"The first {rows[0][1].shape[0]} evaluation images; "
                                                        f"output: {view.reconstruction_caption(model, seed)}.")


def _samples(report: HtmlReport, view: _AutoencoderView, model, dataset, cfg, seed: int,
             classes: Sequence[str]) -> None:
    report.add_section("Samples")
    device = _device(model)
    if _conditional(model):
        z = view.latents(model, CLASS_SAMPLES, _generator(seed, device))
        k = model.num_classes
        y = torch.arange(k, device=device).repeat_interleave(CLASS_SAMPLES)
        images = view.decode(model, z.repeat(k, 1), y).split(CLASS_SAMPLES)  # one call: small batches cost as much
        rows = [(_class_name(classes, c), images[c]) for c in range(k)]
        report.add_figure(None, _rows_figure(rows),
                          caption=f"One row per class, the same {CLASS_SAMPLES} latents z ~ N(0, I) in every row "
                                  f"(generator seeded with eval.seed = {seed}), so each column keeps its latent and "
                                  "only the class changes." + view.sample_note)
    else:
        n = int(_eval_cfg(cfg, "grid_samples", 64))
        images = _unit(model, model.sample(n, None, generator=_generator(seed, device)))
        report.add_image(None, _grid_image(images, GRID_COLUMNS),
                         caption=f"{n} samples from fixed noise z ~ N(0, I) (generator seeded with eval.seed = "
                                 f"{seed}: the latents of the per-epoch progress grids)." + view.sample_note)
    n_real = min(RECON_IMAGES, len(dataset))
    if n_real:
        real = torch.stack([dataset.image(i) for i in range(n_real)])
        report.add_image("Real evaluation images", _grid_image(real, GRID_COLUMNS),
                         caption=f"The first {n_real} evaluation images, for comparison.")


def _pairs(labels: list[int], rows: int, same_class: bool) -> list[tuple[int, int]]:
    """Up to `rows` disjoint pairs of indices whose labels are equal (`same_class`) or differ; consecutive
    pairs fill up when there are too few."""
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    for i in range(len(labels)):
        if len(pairs) == rows:
            break
        if i in used:
            continue
        for j in range(i + 1, len(labels)):
            if j not in used and (labels[i] == labels[j]) == same_class:
                pairs.append((i, j))
                used |= {i, j}
                break
    for i in range(0, len(labels) - 1, 2):
        if len(pairs) >= rows:
            break
        if i not in used and i + 1 not in used:
            pairs.append((i, i + 1))
            used |= {i, i + 1}
    return pairs


def _section(report: HtmlReport, title: str, draw, *args) -> None:
    report.add_section(title)
    draw(report, *args)


def _projection(report: HtmlReport, view: _AutoencoderView, model, x: torch.Tensor, y: torch.Tensor,
                seed: int, classes: Sequence[str]) -> None:
    report.add_section("Latent space (2-D projection)")
    n = x.shape[0]
    if n < 2:
        report.add_note("The projection needs at least two evaluation images.")
        return
    codes, _ = view.encode(model, x, y, seed)
    z = codes.double().cpu()
    if z.shape[1] == 1:
        points, axes = torch.cat([z, torch.zeros_like(z)], 1), ("z0", "")
        how = "the single latent dimension (vertical axis unused)"
    elif z.shape[1] == 2:
        points, axes = z, ("z0", "z1")
        how = "the two latent dimensions as they are"
    else:
        centered = z - z.mean(0)
        _, s, vh = torch.linalg.svd(centered, full_matrices=False)
        points = centered @ vh[:2].T
        explained = (s.pow(2) / s.pow(2).sum().clamp_min(1e-300))[:2].tolist()
        axes = (f"PC1 ({explained[0]:.0%} of variance)", f"PC2 ({explained[1]:.0%} of variance)")
        how = (f"the first two principal components of the {z.shape[1]}-d codes "
               f"({explained[0] + explained[1]:.0%} of their variance)")
    fig = new_figure(6.4, 4.8)
    ax = fig.add_subplot()
    labels = y.cpu().numpy()
    pts = points.numpy()
    for k in np.unique(labels):
        mask = labels == k
        ax.scatter(pts[mask, 0], pts[mask, 1], s=9, alpha=0.7, linewidths=0,
                   color=_CLASS_COLORS[int(k) % len(_CLASS_COLORS)], label=_class_name(classes, int(k)))
    ax.set_xlabel(axes[0], fontsize=9)
    ax.set_ylabel(axes[1], fontsize=9)
    if z.shape[1] == 1:
        ax.set_yticks([])
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(fontsize=8, frameon=False, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    report.add_figure(None, fig, caption=f"The {view.projected_codes} of {n} evaluation images, projected on "
                                         f"{how}, coloured by the dataset's class label (which the model was not "
                                         "trained to separate"
                                         + (", except as a conditioning input" if _conditional(model) else "")
                                         + ").")


def _fid_curves(report: HtmlReport, records: list[dict], extractor: str | None) -> None:
    """Validation FID and KID by epoch, in a figure that names the feature extractor."""
    series: dict[str, dict[float, float]] = {"fid": {}, "kid": {}}
    for r in records:
        if r.get("type") != "val" or not isinstance(r.get("epoch"), (int, float)):
            continue
        for key in series:
            value = r.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                series[key][float(r["epoch"])] = float(value)  # a resumed run's later value wins
    if not series["fid"]:
        report.add_note("No validation FID in the training log.", title="FID during training")
        return
    panels = [k for k in ("fid", "kid") if series[k]]
    fig = new_figure(4.6 * len(panels), 3.3)
    for ax, key in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        epochs = sorted(series[key])
        values = [series[key][e] for e in epochs]
        ax.plot(epochs, values, color="#d62728", linewidth=1.4, marker="o", markersize=3.5)
        ax.annotate(f"{values[-1]:.4g}", (epochs[-1], values[-1]), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=8, color="#d62728")
        ax.set_title(f"Validation {key.upper()} \u00b7 {_short_extractor(extractor)}", fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.set_ylabel(key.upper(), fontsize=9)
        ax.grid(True, alpha=0.3, linewidth=0.6)
        ax.tick_params(labelsize=8)
        if all(float(e).is_integer() for e in epochs):
            ax.xaxis.get_major_locator().set_params(integer=True)
    report.add_figure("FID during training", fig,
                      caption="FID (lower is better) of generated samples against the validation images at each "
                              f"evaluated epoch; features: {extractor or 'feature extractor not recorded'}.")


def _epoch_of(path: Path) -> int | None:
    match = re.search(r"epoch_(\d+)", Path(path).stem)
    return int(match.group(1)) if match else None


def _progress(report: HtmlReport, view: _AutoencoderView, model, progress_images: Sequence[str | Path],
              seed: int) -> None:
    report.add_section("Progress across epochs")
    paths = [Path(p) for p in progress_images or []]
    paths.sort(key=lambda p: (_epoch_of(p) is None, _epoch_of(p) or 0, p.name))
    if not paths:
        report.add_note("No per-epoch grids were saved (run_dir/progress/epoch_NNN.png, written after every "
                        "training epoch).")
        return
    keep = sorted({int(round(v)) for v in np.linspace(0, len(paths) - 1, min(PROGRESS_SHOWN, len(paths)))})
    items = []
    for i in keep:
        try:
            with Image.open(paths[i]) as im:
                image = im.convert("RGB")
        except OSError as e:
            report.add_note(f"Could not read {paths[i].name}: {e}")
            continue
        epoch = _epoch_of(paths[i])
        items.append((image, f"epoch {epoch}" if epoch is not None else paths[i].stem))
    what = view.progress_caption(model, seed)
    report.add_image_grid(None, items, columns=min(4, max(1, len(items))), max_size=320,
                          caption=f"{len(items)} of {len(paths)} epochs (evenly spaced, the last included): {what}.")


# ---- the report -----------------------------------------------------------------------------------
def build_generative_report(
    out_path: str | Path,
    *,
    title: str,
    metrics: Mapping,
    dataset,
    model,
    cfg,
    log_records: Sequence[dict] | None = None,
    run_info: Mapping | None = None,
    model_summary: Mapping | None = None,
    progress_images: Sequence[str | Path] = (),
) -> Path:
    """Write the report of a generative model (`model.kind`: "autoencoder", "vae" or "gan") to `out_path` and
    return its path. `metrics`: the kind's accumulator output (metrics.py); `dataset`: the evaluation
    GenerativeImages (images, labels and class names); `progress_images`: the per-epoch grids written by
    :func:`progress_grid`. Sections: Summary; Reconstructions (autoencoders, VAEs); Samples (VAEs, GANs);
    Latent interpolation; Latent traversals; Latent space (2-D projection) (autoencoders, VAEs); Training
    curves; Progress across epochs; Run information (each kind's image sections: its view's `sections`)."""
    model = unwrap(model)
    metrics = dict(metrics or {})
    view = _view(model)
    seed = int(_eval_cfg(cfg, "seed", 0))
    classes = [str(c) for c in getattr(dataset, "classes", []) or []]
    name = getattr(getattr(cfg, "model", None), "name", None)
    parts = ["Generative report", view.title(model)]
    if name:
        parts.append(str(name))
    parts.append("\u00d7".join(map(str, model.image_shape)) + f" images, latent {model.latent_dim}")
    if _conditional(model):
        parts.append(f"conditional on {model.num_classes} classes")
    if metrics.get("num_images"):
        parts.append(f"{int(metrics['num_images']):,} evaluation images")
    if metrics.get("warnings"):
        parts.append(f"\u26a0 {len(metrics['warnings'])} warning" + ("s" if len(metrics["warnings"]) > 1 else ""))
    report = HtmlReport(title, subtitle=" \u00b7 ".join(parts))
    _summary(report, view, model, metrics, model_summary)
    plan = view.sections
    with _inference(model, seed):
        x = y = torch.zeros(0)
        if "reconstructions" in plan or "projection" in plan:  # the kinds with an encoder see real images
            x, y = _load(dataset, range(min(len(dataset), PROJECTION_IMAGES)), _device(model))
        sections = {
            "reconstructions": lambda: _reconstructions(report, view, model, x, y, seed),
            "samples": lambda: _samples(report, view, model, dataset, cfg, seed, classes),
            "interpolation": lambda: _section(report, "Latent interpolation", view.interpolation,
                                              model, x, y, seed, classes),
            "traversals": lambda: _section(report, "Latent traversals", view.traversals, model, x, y, seed,
                                           classes, min(TRAVERSAL_DIMS, model.latent_dim)),
            "projection": lambda: _projection(report, view, model, x, y, seed, classes),
        }
        for section in plan:
            sections[section]()
    view.curves(report, [r for r in (log_records or []) if isinstance(r, dict)], metrics)
    _progress(report, view, model, progress_images, seed)
    add_run_info(report, run_info)
    return report.write(out_path)
