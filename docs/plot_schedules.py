"""Draw docs/schedules.png: the CALR learning rate and the marginals' temperature over steps.

Run from the repository root: `python docs/plot_schedules.py [-o docs/schedules.png]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from widthwise.search.schedules import CyclicallyAnnealedLR, GeometricTemperature, schedule_values  # noqa: E402

STEPS = 1200
CALR = CyclicallyAnnealedLR(lr_min=1e-4, lr_max=1e-2, cycle_steps=200, decay=0.6)
TEMPERATURE = GeometricTemperature(t_start=5.0, t_end=0.1, steps=1000)


def plot(path: Path) -> None:
    """Two panels sharing the step axis: CALR with its peak envelope, then the temperature."""
    steps = list(range(STEPS))
    fig, (ax_lr, ax_t) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, constrained_layout=True)

    ax_lr.plot(steps, schedule_values(CALR, STEPS), color="tab:blue", label="CALR learning rate")
    cycles = range(STEPS // CALR.cycle_steps)
    peak_steps = [c * CALR.cycle_steps + CALR.rise_steps for c in cycles]
    ax_lr.plot(peak_steps, [CALR.peak(c) for c in cycles], "o--", color="tab:orange",
               label=f"cycle peak: lr_min + (lr_max - lr_min) x {CALR.decay}^c")
    ax_lr.axhline(CALR.lr_max, color="grey", lw=0.8, ls=":")
    ax_lr.axhline(CALR.lr_min, color="grey", lw=0.8, ls=":")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title(f"CALR: lr_min={CALR.lr_min:g}, lr_max={CALR.lr_max:g}, "
                    f"cycle_steps={CALR.cycle_steps}, decay={CALR.decay}")
    ax_lr.legend(loc="upper right")

    ax_t.plot(steps, schedule_values(TEMPERATURE, STEPS), color="tab:green")
    ax_t.set_yscale("log")
    ax_t.set_ylabel("temperature (log scale)")
    ax_t.set_xlabel("training step")
    ax_t.set_title(f"marginals' temperature: geometric {TEMPERATURE.t_start:g} -> {TEMPERATURE.t_end:g} "
                   f"over {TEMPERATURE.steps} steps, then held")
    for ax in (ax_lr, ax_t):
        ax.grid(alpha=0.3)

    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("schedules.png"))
    args = parser.parse_args()
    plot(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
