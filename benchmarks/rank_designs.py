"""Ranking designs by forecast (issue 13, deliverable 2): read a combined study result (e.g.
`repkernel run studies/design_ranking.toml --out results/designs`), rank its designs by the
generalization of the network at the forecast weights and at the trained weights
(repkernel.rank_designs), print the agreement and the cost, and draw forecast vs actual scores.

    OMP_NUM_THREADS=1 python benchmarks/rank_designs.py results/designs --out reports/designs

Cost = the cells' forecast CPU seconds / their training CPU seconds (time.process_time around
repkernel.forecast and repkernel.train in each cell, one torch thread for these networks).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import repkernel as rk
from repkernel import plot, studies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="folder of a finished study (combined.nc)")
    parser.add_argument("--out", type=Path, default=Path("reports/designs"))
    args = parser.parse_args()
    combined = studies.load_tree(args.study / "combined.nc")
    ranking = rk.rank_designs(combined)
    args.out.mkdir(parents=True, exist_ok=True)
    rk.save(ranking, args.out / "rank_designs.nc")

    for measure in ranking["measure"].values:
        one = ranking.sel(measure=measure)
        print(f"\n{measure}: Spearman r (forecast vs actual over {one.sizes['design']} designs) "
              f"= {float(one['spearman']):.3f}; same best design: "
              f"{bool(one['top1_agreement'])}; training ranks the forecast's best "
              f"{int(one['forecast_top_actual_rank'])}")
        order = np.argsort(one["rank"].sel(source="actual").values)
        print(f"{'design':<62} {'forecast':>9} {'actual':>9} {'rank f':>6} {'rank a':>6}")
        for i in order:
            print(f"{one['design'].values[i]:<62} "
                  f"{float(one['score'].sel(source='forecast')[i]):9.3f} "
                  f"{float(one['score'].sel(source='actual')[i]):9.3f} "
                  f"{int(one['rank'].sel(source='forecast')[i]):6d} "
                  f"{int(one['rank'].sel(source='actual')[i]):6d}")
    print(f"\ncost: forecasts {ranking.attrs['forecast_cpu_seconds']:.1f} s CPU, training "
          f"{ranking.attrs['train_cpu_seconds']:.1f} s CPU: ratio "
          f"{ranking.attrs['cost_ratio']:.3f}")

    with plot.paper_style():
        figure, axes = plt.subplots(1, ranking.sizes["measure"], figsize=(11, 4.8))
        for ax, measure in zip(np.atleast_1d(axes), ranking["measure"].values):
            one = ranking.sel(measure=measure)
            actual, forecast = (one["score"].sel(source=s).values for s in ("actual", "forecast"))
            activation = one["activation"].values if "activation" in one.coords else None
            markers = dict(zip(sorted(set(activation)), "osD^v")) if activation is not None \
                else {}
            for i in range(len(actual)):
                ax.scatter(actual[i], forecast[i], marker=markers.get(
                    activation[i], "o") if activation is not None else "o",
                    color=f"C{list(markers).index(activation[i]) if activation is not None else 0}")
            ax.set_xlabel(f"actual {measure.replace('_', ' ')}")
            ax.set_ylabel(f"forecast {measure.replace('_', ' ')}")
            ax.set_title(f"Spearman r = {float(one['spearman']):.2f}")
            for label, marker in markers.items():
                ax.scatter([], [], marker=marker, color=f"C{list(markers).index(label)}",
                           label=label)
            ax.legend(fontsize="small")
        figure.suptitle(f"designs ranked by forecast vs by training (forecast cost "
                        f"{ranking.attrs['cost_ratio']:.2f} x training)")
        figure.tight_layout()
        plot.save_figure(figure, args.out / "rank_designs.png")
        plt.close(figure)
    print(f"wrote {args.out / 'rank_designs.nc'} and {args.out / 'rank_designs.png'}")


if __name__ == "__main__":
    main()
