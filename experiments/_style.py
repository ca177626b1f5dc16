"""One figure style for every experiment script: sizes, fonts, one colour per method, axis labels with units.

``experiments._common.setup()`` applies :data:`RC` (matplotlib rcParams); scripts size figures with
:func:`figsize` (a fixed panel size, so text is the same size in every figure), colour a method with
:func:`style` (the same colour, marker and line style for that method in every figure of the toolkit;
the names are the ``method`` / ``policy`` / ``estimator`` values of the CSVs) and label axes with
:func:`label` (quantity and unit). Colours: the Okabe–Ito colour-blind-safe palette.
"""

from __future__ import annotations

#: Okabe–Ito colour-blind-safe palette (black, orange, sky blue, bluish green, yellow, blue, vermillion, purple)
OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]
#: colours for series that are not methods (lengths, tasks, seeds), in order
SERIES = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
GREY = "#777777"

#: width and height (inches) of one panel; figures are a grid of panels
PANEL = (4.0, 3.1)

RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "figure.titlesize": 10,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "image.cmap": "viridis",
}

# One look per method across all figures. Keys are the method names the scripts write into their CSVs.
_COLOR = {
    # computed vs measured
    "exact": "#000000", "closed form": "#000000", "exact (block product)": "#555555", "mc": "#0072B2",
    "mc (learned)": "#D55E00", "autoregressive": "#000000",
    # reveal policies and samplers
    "RandomOrder": "#0072B2", "LeftToRight": "#555555", "TopK": "#CC79A7", "EB": "#009E73",
    "PlackettLuce": "#D55E00",
    # schedules and reveal modes
    "linear": "#0072B2", "cosine": "#E69F00", "cosine_squared": "#009E73", "chen_sine": "#CC79A7",
    "beta": "#D55E00", "bernoulli": "#0072B2", "fixed": "#D55E00",
    # training estimators (Jia2025)
    "standard": "#000000", "standard (eps=0)": "#777777", "P-POTS (p*)": "#0072B2", "P-POTS (fit)": "#56B4E9",
    "MIRROR": "#E69F00", "StraTS": "#F0E442", "EMA": "#999933", "ISAD": "#009E73", "P-POTS+MIRROR": "#D55E00",
    # learned orders (Garg2025)
    "uniform order": "#000000", "exact gradient": "#D55E00", "RLOO over orders": "#0072B2",
    "RLOO over masks": "#CC79A7",
    # the sampler registry (theory/samplers.py)
    "mdlm": "#0072B2", "llada-low-confidence": "#D55E00", "llada-semi-ar": "#E69F00", "topk-confidence": "#CC79A7",
    "maskgit": "#56B4E9", "maskgit-maxprob": "#000000", "eb-sampler": "#009E73", "confidence-threshold": "#F0E442",
    "remdm-cap": "#777777",
    # any-process generation (Yang2025)
    "plain MDM": "#000000", "remask (prefix)": "#0072B2", "remask (factor)": "#E69F00",
}  # fmt: skip
_MARKER = {"exact": "", "closed form": "", "exact (block product)": "", "mc": "o", "mc (learned)": "x", "EB": "o",
           "TopK": "s", "plain MDM": "o", "remask (prefix)": "s", "remask (factor)": "^",
           "mdlm": "o", "llada-low-confidence": "s", "llada-semi-ar": "^", "topk-confidence": "v", "maskgit": "D",
           "maskgit-maxprob": "P", "eb-sampler": "X", "confidence-threshold": "*", "remdm-cap": "h"}  # fmt: skip
_LINE = {"exact": "--", "closed form": "-", "exact (block product)": "-", "mc": "none", "mc (learned)": "none",
         "EB": "-", "TopK": "--", "fixed": ":", "bernoulli": "-", "standard (eps=0)": "--"}  # fmt: skip

# Axis labels: quantity [unit]. Unitless quantities (probabilities, counts) say what they count.
LABELS = {
    "steps": "steps N",
    "nfe": "NFE [denoiser calls]",
    "expected_nfe": "expected NFE [denoiser calls]",
    "length": "length L [tokens]",
    "kl": "KL(q ‖ p_N) [nats]",
    "ter_gap": "TER gap  log TER(p_N) − log TER(q)  [nats/token]",
    "ser": "SER [probability]",
    "accuracy": "accuracy (1 − SER) [probability]",
    "probability": "probability",
    "nll_gap": "NLL bound − H(q) [nats]",
    "training_step": "training step",
    "denoiser_calls": "denoiser calls",
    "t": "t (0 data, 1 mask)",
}


def style(method: str) -> dict:
    """matplotlib keyword arguments (color, marker, linestyle) of a method, the same in every figure."""
    return {
        "color": _COLOR.get(method, "#444444"),
        "marker": _MARKER.get(method, "o"),
        "linestyle": _LINE.get(method, "-"),
    }


def color(method: str) -> str:
    """The colour of a method (grey for names the palette does not know)."""
    return _COLOR.get(method, "#444444")


def series_color(i: int) -> str:
    """The i-th colour for series that are not methods (lengths, tasks, seeds)."""
    return SERIES[i % len(SERIES)]


def figsize(ncols: int = 1, nrows: int = 1, scale: float = 1.0) -> tuple[float, float]:
    """Figure size (inches) of an nrows × ncols grid of panels, each :data:`PANEL` × ``scale``."""
    return (PANEL[0] * ncols * scale, PANEL[1] * nrows * scale)


def label(quantity: str, extra: str = "") -> str:
    """The axis label of a quantity with its unit (``extra`` is appended, e.g. a floor or a note)."""
    text = LABELS.get(quantity, quantity)
    return f"{text} {extra}".strip()


def apply() -> None:
    """Set the toolkit's rcParams (called by ``experiments._common.setup``)."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update(RC)
    mpl.rcParams["axes.prop_cycle"] = cycler(color=SERIES)
