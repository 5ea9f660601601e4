"""End-of-run report: `OUTPUT/report/metrics.json`, PNG plots and `summary.md`.

`metrics.json` keeps every stage's raw metrics and adds the headline keys users compare across
runs: `warmup.heldout_accuracy.{deep,fast,mean}`, `grpo.heldout_accuracy.*`,
`grpo.mean_completion_tokens.*`, `rlaifv.chair_i.{before,after}`, `rlaifv.chair_s.*`,
`wall_seconds`, `steps.{warmup,grpo,dpo}`, and `heldout_deltas`: every held-out accuracy change
between consecutive stages (deep, fast, mean over modes; all questions, per task and per qtype
group) and the deep-minus-fast gap of each stage, each with a 95% paired-bootstrap interval over
questions (`rl.stats`); the summary writes "no effect" when an interval covers 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rl.data.config import COMPOSE_QTYPES  # Shapes question groups (other data: by task only)

MODES = ("deep", "fast")
STAGE_ORDER = ("warmup", "grpo", "rlaifv")
NEW_TO_RL = "new to RL"  # group of short questions whose qtype the warm-up never trained on


def _groups(questions: dict[str, list[str]], taught: set[str] | None = None) -> dict[str, set[str]]:
    """Question ids of "all", each task, and (when present) the compositional / perception sets;
    with `taught` (the qtypes the warm-up trained on), also "new to RL": short questions of a qtype
    the warm-up never saw, where any gain is RL's own."""
    out: dict[str, set[str]] = {"all": set(questions)}
    for qid, (task, qtype) in questions.items():
        out.setdefault(f"task:{task}", set()).add(qid)
        if task == "short":
            out.setdefault("compose" if qtype in COMPOSE_QTYPES else "perception", set()).add(qid)
            if taught is not None and qtype not in taught:
                out.setdefault(NEW_TO_RL, set()).add(qid)
    return out


def taught_qtypes(metrics: dict[str, Any]) -> set[str] | None:
    """The qtypes of the warm-up's SFT examples (None when the warm-up did not train)."""
    by_qtype = ((metrics.get("warmup") or {}).get("data") or {}).get("by_qtype")
    return set(by_qtype) if by_qtype else None


def _mode_scores(ev: dict[str, Any], mode: str) -> dict[str, float]:
    scores = ev.get("scores", {})
    if mode == "mean":  # both modes answered each question: its mean-over-modes score
        common = set(scores.get("deep", {})) & set(scores.get("fast", {}))
        return {q: (scores["deep"][q] + scores["fast"][q]) / 2 for q in common}
    return dict(scores.get(mode, {}))


def heldout_deltas(metrics: dict[str, Any]) -> dict[str, Any]:
    """Paired-bootstrap deltas between consecutive evaluated stages, and each stage's deep - fast gap."""
    from rl.stats import paired_delta

    evals = [(s, metrics[s]["eval"]) for s in STAGE_ORDER
             if isinstance(metrics.get(s), dict) and metrics[s].get("eval", {}).get("scores")]
    out: dict[str, Any] = {"stages": {}, "mode_gap": {}}
    taught = taught_qtypes(metrics)
    for (s0, e0), (s1, e1) in zip(evals, evals[1:], strict=False):
        groups = _groups({**e0.get("questions", {}), **e1.get("questions", {})}, taught)
        table: dict[str, Any] = {}
        for mode in ("deep", "fast", "mean"):
            a, b = _mode_scores(e0, mode), _mode_scores(e1, mode)
            for name, ids in groups.items():
                d = paired_delta({q: a[q] for q in ids if q in a}, {q: b[q] for q in ids if q in b})
                if d.n:
                    table.setdefault(name, {})[mode] = d.to_dict()
        out["stages"][f"{s0}->{s1}"] = table
    for stage, ev in evals:
        groups = _groups(ev.get("questions", {}), taught)
        deep, fast = _mode_scores(ev, "deep"), _mode_scores(ev, "fast")
        gap = {}
        for name, ids in groups.items():
            d = paired_delta({q: fast[q] for q in ids if q in fast}, {q: deep[q] for q in ids if q in deep})
            if d.n:
                gap[name] = d.to_dict()
        out["mode_gap"][stage] = gap
    return out


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """Add the headline keys (in place) from each stage's raw metrics; returns `metrics`."""
    steps = metrics.setdefault("steps", {})
    for stage in ("warmup", "grpo"):
        m = metrics.get(stage)
        if not isinstance(m, dict):
            continue
        ev = m.get("eval", {})
        if ev:
            m["heldout_accuracy"] = dict(ev.get("accuracy", {}))
            m["heldout_accuracy_by_task"] = dict(ev.get("accuracy_by_task", {}))
            m["heldout_accuracy_by_qtype"] = dict(ev.get("accuracy_by_qtype", {}))
            m["mean_completion_tokens"] = dict(ev.get("mean_completion_tokens", {}))
        steps[stage] = int(m.get("steps", 0))
    rl = metrics.get("rlaifv")
    if isinstance(rl, dict):
        steps["dpo"] = int(rl.get("steps", 0))
    steps.setdefault("dpo", 0)
    metrics["heldout_deltas"] = heldout_deltas(metrics)
    return metrics


def _series(log: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in log if key in r and "step" in r]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def plot(metrics: dict[str, Any], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    log = (metrics.get("grpo") or {}).get("log") or []
    # Accuracy over every sampled group (before the std filter), falling back to the kept groups
    # for logs written before that key existed.
    panels = [("reward per mode", "{m}/total"), ("sampled accuracy per mode (before the std filter)", "sampled/{m}/accuracy"),
              ("completion tokens per mode", "{m}/mean_tokens")]
    for title, pattern in panels:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        drawn = False
        for mode in MODES:
            x, y = _series(log, pattern.format(m=mode))
            if not x and pattern.startswith("sampled/"):
                x, y = _series(log, pattern.removeprefix("sampled/").format(m=mode))
            if x:
                ax.plot(x, y, label=mode)
                drawn = True
        if drawn:
            ax.set_title(f"GRPO: {title}")
            ax.set_xlabel("step")
            ax.legend()
            path = folder / f"grpo_{pattern.split('/')[-1]}_per_mode.png"
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            paths.append(path)
        plt.close(fig)
    rl = metrics.get("rlaifv") or {}
    if "chair_i" in rl:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        labels = ["CHAIRi", "CHAIRs"]
        before = [rl["chair_i"]["before"], rl["chair_s"]["before"]]
        after = [rl["chair_i"]["after"], rl["chair_s"]["after"]]
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], before, width=0.4, label="before")
        ax.bar([x + 0.2 for x in xs], after, width=0.4, label="after")
        ax.set_xticks(list(xs), labels)
        ax.set_title("RLAIF-V: hallucination before/after")
        ax.legend()
        path = folder / "chair_before_after.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _interval(d: dict[str, Any]) -> str:
    return (f"{d['delta'] * 100:+.1f} [{d['lo'] * 100:+.1f}, {d['hi'] * 100:+.1f}] "
            f"{'' if d['verdict'] != 'no effect' else '(no effect)'}").strip()


def _delta_lines(deltas: dict[str, Any]) -> list[str]:
    """Markdown tables of the held-out deltas (points, 95% paired-bootstrap interval)."""
    lines: list[str] = []
    for pair, table in (deltas.get("stages") or {}).items():
        lines += ["", f"Held-out accuracy change {pair.replace('->', ' → ')} (points, 95% paired-bootstrap "
                      "interval over questions; \"no effect\" when it covers 0):", "",
                  "| questions | n | deep | fast | mean over modes |", "|---|---|---|---|---|"]
        for name, row in table.items():
            n = next(iter(row.values()))["n"]
            lines.append(f"| {name} | {n} | " + " | ".join(_interval(row[m]) if m in row else "–"
                                                         for m in ("deep", "fast", "mean")) + " |")
    gaps = deltas.get("mode_gap") or {}
    if gaps:
        names = sorted({k for g in gaps.values() for k in g}, key=lambda k: (k != "all", k))
        lines += ["", "Deep minus fast accuracy per stage (points, 95% paired-bootstrap interval):", "",
                  "| stage | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for stage, g in gaps.items():
            lines.append(f"| {stage} | " + " | ".join(_interval(g[k]) if k in g else "–" for k in names) + " |")
    return lines


def _qtype_lines(metrics: dict[str, Any]) -> list[str]:
    """Accuracy per qtype and stage (deep / fast) next to the majority-answer prior."""
    stages = [s for s in STAGE_ORDER if isinstance(metrics.get(s), dict) and "eval" in metrics[s]]
    prior = next((metrics[s]["eval"].get("majority_by_qtype") for s in stages
                  if metrics[s]["eval"].get("majority_by_qtype")), None)
    if not prior:
        return []
    lines = ["", "Per question type, deep / fast, against always giving the most common held-out answer:", "",
             "| qtype | n | most common answer (share) | " + " | ".join(stages) + " |",
             "|---|---|---|" + "---|" * len(stages)]
    for qtype, p in prior.items():
        cells = []
        for s in stages:
            by = metrics[s]["eval"].get("accuracy_by_qtype", {})
            cells.append(" / ".join(f"{by[m][qtype]:.2f}" if qtype in by.get(m, {}) else "–" for m in MODES))
        lines.append(f"| {qtype} | {p['n']} | {p['answer']} ({p['share']:.2f}) | " + " | ".join(cells) + " |")
    return lines


def summary_md(metrics: dict[str, Any], plots: list[Path]) -> str:
    lines = ["# Run summary", "", "| stage | acc deep | acc fast | acc mean | tokens deep | tokens fast | steps |", "|---|---|---|---|---|---|---|"]
    for stage in ("warmup", "grpo", "rlaifv"):
        m = metrics.get(stage)
        if not isinstance(m, dict) or "eval" not in m:
            continue
        acc, tok = m["eval"].get("accuracy", {}), m["eval"].get("mean_completion_tokens", {})
        lines.append(
            f"| {stage} | {acc.get('deep', 0):.3f} | {acc.get('fast', 0):.3f} | {acc.get('mean', 0):.3f} | "
            f"{tok.get('deep', 0):.1f} | {tok.get('fast', 0):.1f} | {m.get('steps', 0)} |"
        )
    lines += _delta_lines(metrics.get("heldout_deltas") or {})
    lines += _qtype_lines(metrics)
    rl = metrics.get("rlaifv") or {}
    if "chair_i" in rl:
        lines += rlaifv_lines(rl)
    bon = rl.get("best_of_n")
    if isinstance(bon, dict):
        rs = bon.get("random_sample", {})
        lines += ["", f"RLAIF-V best-of-{bon.get('n', '?')} (self-reward): CHAIRi {bon.get('chair_i', 0):.3f}, "
                      f"CHAIRs {bon.get('chair_s', 0):.3f}, Cover {bon.get('cover', 0):.3f} vs a random sample "
                      f"{rs.get('chair_i', 0):.3f} / {rs.get('chair_s', 0):.3f} / {rs.get('cover', 0):.3f}"]
    lines += ["", f"Wall time: {metrics.get('wall_seconds', 0):.0f} s", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def rlaifv_lines(rl: dict[str, Any]) -> list[str]:
    """The RLAIF-V paragraph: CHAIR before → after with paired-bootstrap intervals, and per round
    the labeler's agreement with the ground truth."""
    cover = rl.get("cover", {})
    ch = rl.get("change") or {}

    def interval(d: dict[str, Any] | None, fmt: str = "+.3f") -> str:
        return f" (Δ {d['delta']:{fmt}} [{d['lo']:{fmt}}, {d['hi']:{fmt}}])" if d else ""

    ratio = (ch.get("chair_i") or {}).get("ratio")
    lines = ["", f"RLAIF-V (labeler `{rl.get('labeler', '?')}`, {rl.get('heldout_descriptions', '?')} held-out "
                 f"descriptions, greedy; 95% paired-bootstrap intervals): CHAIRi {rl['chair_i']['before']:.3f} → "
                 f"{rl['chair_i']['after']:.3f}{interval((ch.get('chair_i') or {}).get('delta'))}"
                 + (f", after/before {ratio['after']:.2f} [{ratio['lo']:.2f}, {ratio['hi']:.2f}]" if ratio else "")
                 + f"; CHAIRs {rl['chair_s']['before']:.3f} → {rl['chair_s']['after']:.3f}"
                 f"{interval((ch.get('chair_s') or {}).get('delta'))}; Cover {cover.get('before', 0):.3f} → "
                 f"{cover.get('after', 0):.3f}{interval(ch.get('cover'))} (a CHAIR drop with Cover near 0 means the "
                 "model stopped mentioning objects, not that it stopped hallucinating)"]
    rows = []
    for i, r in enumerate(rl.get("rounds") or []):
        agree = r.get("labeler_agreement") or r.get("self_labeler_agreement") or {}
        if agree:
            rows.append(f"| {i} | {r.get('claims', 0)} | {agree.get('accuracy') or 0:.3f} | "
                        f"{agree.get('balanced_accuracy') or 0:.3f} | {agree.get('oracle_rejection_rate') or 0:.3f} | "
                        f"{r.get('pairs', 0)} |")
    if rows:
        who = "the policy as its own labeler (not used)" if rl.get("labeler") == "oracle" else "the labeler"
        lines += ["", f"Agreement of {who} with the ground truth on each round's claims:", "",
                  "| round | claims | accuracy | balanced accuracy | false-claim share | pairs |", "|---|---|---|---|---|---|",
                  *rows]
    return lines


def write_report(out: str | Path, metrics: dict[str, Any]) -> Path:
    folder = Path(out) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    headline(metrics)
    plots = plot(metrics, folder)
    (folder / "summary.md").write_text(summary_md(metrics, plots))
    path = folder / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
    return path
