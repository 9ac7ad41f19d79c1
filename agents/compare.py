"""Compare policies evaluated in the real simulator: a table and one matplotlib figure.

Each entry is a label and a :func:`~agents.real_eval.real_eval` JSON, optionally with the training run it came
from (``returns.csv``, ``run.json``). The figure has the real-simulator outcome per entry (success rate with its
Wilson interval where the simulator reports success, else the mean return with its t interval) and, for entries
with a run, their training curves against env steps and against wall-clock seconds, so that "trained in the world"
and "trained in the simulator for the same steps / the same time" read off one picture.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.sb3_training import read_returns


@dataclass
class Entry:
    """One compared policy.

    Attributes:
        label: Name in the plot and table.
        result: Its :func:`~agents.real_eval.real_eval` result.
        run: Its training run directory, or ``None`` (the random policy).
    """

    label: str
    result: dict[str, Any]
    run: Path | None = None

    @classmethod
    def load(cls, label: str, eval_json: str | os.PathLike[str], run: str | os.PathLike[str] | None = None) -> Entry:
        """Reads ``eval_json``; ``run`` (optional) must hold ``returns.csv``."""
        path = Path(eval_json)
        try:
            result = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no real-eval result at {path} (write one with genie-env real-eval)") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not a real-eval JSON: {exc}") from None
        if not isinstance(result, dict) or "mean_return" not in result:
            raise ValueError(f"{path} is not a real-eval result (no mean_return)")
        run_dir = Path(run) if run is not None else None
        if run_dir is not None and not (run_dir / "returns.csv").is_file():
            raise FileNotFoundError(f"{run_dir} has no returns.csv (a genie-env imagine / real-train run)")
        return cls(label, result, run_dir)

    def run_info(self) -> dict[str, Any]:
        """The run's ``run.json`` (empty without a run or file)."""
        if self.run is None or not (self.run / "run.json").is_file():
            return {}
        return json.loads((self.run / "run.json").read_text())


def table(entries: list[Entry]) -> str:
    """A Markdown table: real success (Wilson 95%), mean return (t 95%), training steps and minutes."""
    lines = [
        "| policy | real success (95% CI) | real mean return (95% CI) | training steps | training minutes |",
        "|---|---|---|---|---|",
    ]
    for e in entries:
        r, info = e.result, e.run_info()
        success = "—"
        if r.get("success_rate") is not None:
            lo, hi = r["success_ci95"]
            success = f"{r['success_rate']:.0%} ({lo:.1%}–{hi:.1%})"
        ret = f"{r['mean_return']:.2f}"
        if r.get("ci95_low") is not None:
            ret += f" ({r['ci95_low']:.2f} to {r['ci95_high']:.2f})"
        steps = f"{info['timesteps']:,}" if "timesteps" in info else "—"
        minutes = f"{info['seconds'] / 60:.1f}" if "seconds" in info else "—"
        lines.append(f"| {e.label} | {success} | {ret} | {steps} | {minutes} |")
    return "\n".join(lines) + "\n"


def comparison_plot(entries: list[Entry], path: str | os.PathLike[str], title: str = "") -> Path:
    """Writes the comparison figure (see the module docstring) to ``path`` (PNG) and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not entries:
        raise ValueError("nothing to compare: give at least one entry")
    with_runs = [e for e in entries if e.run is not None]
    ncols = 1 + (2 if with_runs else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(4.5 * ncols, 3.6), dpi=120, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    # 1. Outcome in the real simulator, with 95% intervals.
    ax = axes[0, 0]
    use_success = all(e.result.get("success_rate") is not None for e in entries)
    for i, e in enumerate(entries):
        r = e.result
        if use_success:
            value, (lo, hi) = 100 * r["success_rate"], (100 * x for x in r["success_ci95"])
        else:
            value = r["mean_return"]
            lo = r["ci95_low"] if r.get("ci95_low") is not None else value
            hi = r["ci95_high"] if r.get("ci95_high") is not None else value
        err = [[max(value - lo, 0.0)], [max(hi - value, 0.0)]]  # Wilson's bound may sit a rounding error off
        ax.bar(i, value, color=colours[i % len(colours)], yerr=err, capsize=4)
    ax.set_xticks(range(len(entries)), [e.label for e in entries], rotation=20, ha="right")
    episodes = entries[0].result.get("episodes")
    ylabel = "real success rate (%)" if use_success else "real mean return"
    ax.set(ylabel=ylabel, title=f"{entries[0].result.get('env_id', '')}, {episodes} episodes, 95% CI")

    # 2. Training curves against env steps and wall-clock (running means of the training-episode returns).
    if with_runs:
        for i, e in enumerate(entries):
            if e.run is None:
                continue
            rows = read_returns(e.run)
            if not rows:
                continue
            steps = np.array([r[0] for r in rows])
            seconds = np.array([r[1] for r in rows])
            returns = np.array([r[2] for r in rows])
            window = max(1, len(returns) // 20)
            smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
            colour = colours[i % len(colours)]
            axes[0, 1].plot(steps[window - 1 :], smooth, color=colour, label=e.label)
            if np.isfinite(seconds).all():
                axes[0, 2].plot(seconds[window - 1 :] / 60, smooth, color=colour, label=e.label)
        axes[0, 1].set(xlabel="training env steps", ylabel="training return (running mean)", title="where it trained")
        axes[0, 2].set(xlabel="training wall-clock (min)", ylabel="training return (running mean)")
        axes[0, 1].legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out
