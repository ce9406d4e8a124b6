"""Multi-interest and conditional retrieval vs the single-vector two-tower, on an S3-Rec source.

    .venv/bin/python bench/multi_interest.py [--datasets Beauty LastFM] [--seeds 3] [--workdir DIR]
                                             [--interests 4] [--set KEY=VALUE ...]

Every model trains with the shipped defaults (``conf/base.yaml``'s ``two_tower``), the towers
differing only in ``two_tower.model.user_head=capsules`` + ``user_vectors=--interests`` (multi)
and ``conditional=true`` (conditional); ``--set`` overrides apply to all (and are recorded). The
data comes from the real jobs: ``ingest`` of the S3-Rec files, ``train_two_tower``'s Spark
preparation. Users are split once (seed 0, whatever the model seeds): 10% are *held-out test
users* who train nothing and choose nothing; the rest train (every position of their sequence
but the last two items), stop early on their second-to-last item, and are ranked on their last
item (leave-one-out, full ranking, history masked).

Another 10% are held-out *validation* users: ``--evaluate-on validation`` ranks them instead of the
test users, to choose settings (``--multi-set``) without looking at test figures.

Protocols, per dataset, each figure the mean ± sd over the model seeds:

* **leave-one-out** HR@10 / NDCG@10 of the train users' last items from a 10-pin candidate list
  (multi: per-interest top lists merged round-robin, as served).
* **multi-target** (ComiRec's): a held-out user's first 80% of items is the history, all of the
  last 20% are targets; Recall@20, Recall@50, HR@50 of both towers at the **same number of
  candidates**; diversity (distinct interests — the items' broadest attributes — among the top
  20) and catalogue coverage of the top 50.
* **conditional**: for each held-out user and each interest of their targets, Recall@20 of that
  interest's targets: the conditional tower conditioned on it and searched among its items only,
  vs the single tower's top 20 kept to that interest (post-filtering), split into *head*
  interests (the most engaged ones, covering half of the training engagements) and the *tail*.

Writes ``reports/multi_interest_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.record import Figure, Record, write_record  # noqa: E402
from jobs import ingest, train_two_tower  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.sources.s3rec import s3rec_source  # noqa: E402
from models.retrieval.evaluation import evaluate  # noqa: E402
from models.retrieval.retriever import Retriever, mask_engaged, round_robin  # noqa: E402
from models.retrieval.sequences import Sequences, leave_one_out, trim_padding  # noqa: E402
from models.retrieval.training import TwoTowerData, fit_members  # noqa: E402
from runtime.entry import configure_logging  # noqa: E402
from runtime.session import spark_session  # noqa: E402

HELD_OUT = 0.1  # share of users held out (test; as many again for validation) from training
SPLIT_SEED = 0
# The multi-interest tower: the defaults with a capsule head of --interests interests over the
# history's items themselves (encoder none, as MIND / ComiRec-DR); chosen over capsules on the
# transformer's states by multi-target Recall@50 of LastFM's *validation* users
# (--evaluate-on validation: 0.0986 vs 0.0521, seed 0; reports/multi_interest_choice_lastfm_validation.txt).
MULTI = {"user_head": "capsules", "encoder": "none"}


def load(work: Path, data_root: str, dataset: str, extra: list[str]) -> tuple[TwoTowerData, Any]:
    """The source's sequences, counts and item interests through the real ingest and Spark prep."""
    cfg = load_config(
        "local",
        overrides=[
            f"lake.root={work / 'lake'}",
            f"ingest.data_root={data_root}",
            "ingest.sources=[s3rec]",
            f"ingest.s3rec_datasets=[{dataset}]",
            f"two_tower.source={s3rec_source(dataset)}",
            "two_tower.model.conditional=true",
            *extra,
        ],
    )
    with spark_session("pinpipe-bench-multi-interest", cfg.spark) as spark:
        ingest.run(spark, cfg)
        prepared = train_two_tower.transform(
            train_two_tower.read(spark, cfg), max_attributes_per_item=cfg.two_tower.max_attributes_per_item
        )
        data = train_two_tower.collect(prepared)
    return data, cfg.two_tower


def split_users(sequences: list[list[int]]) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """(train users, held-out test users, held-out validation users; held-out ones with at least
    5 items), by a seeded permutation."""
    order = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    cut = int(len(order) * HELD_OUT)
    test = [sequences[i] for i in order[:cut] if len(sequences[i]) >= 5]
    validation = [sequences[i] for i in order[cut : 2 * cut] if len(sequences[i]) >= 5]
    return [sequences[i] for i in order[2 * cut :]], test, validation


def counts_of(train: Sequences, n_items: int) -> torch.Tensor:
    rows = train.rows[train.rows > 0]
    return torch.bincount(rows, minlength=n_items + 1)


def candidate_lists(
    model, histories: torch.Tensor, n: int, interests: torch.Tensor | None = None, allowed: torch.Tensor | None = None
) -> list[list[int]]:
    """Each user's ``n`` candidates by exact search (history masked): one list, or per-interest
    lists merged round-robin for a capsule tower; ``interests`` conditions a conditional tower,
    ``allowed`` (n_items + 1,) bool restricts the items."""
    retriever = Retriever(model)
    vectors, mass = model.user_tower.encode_with_mass(histories, interests=interests)
    out = []
    for start in range(0, len(histories), 512):
        part = slice(start, start + 512)
        v, m, h = vectors[part], mass[part], histories[part]
        scores = torch.einsum("uvd,cd->uvc", v, retriever.items)
        scores = torch.stack([mask_engaged(scores[:, j], h) for j in range(scores.shape[1])], 1)
        if allowed is not None:
            scores = scores.masked_fill(~allowed[1:].view(1, 1, -1), float("-inf"))
        top_scores, top = scores.topk(n, dim=-1)
        top = torch.where(torch.isfinite(top_scores), top + 1, torch.full_like(top, -1))
        for u in range(len(h)):
            if v.shape[1] == 1:
                out.append([i for i in top[u, 0].tolist() if i > 0])
                continue
            live = (m[u] > 0).nonzero().squeeze(1)
            ids, _, _ = round_robin(top[u, live].numpy(), top_scores[u, live].numpy(), n)
            out.append([int(i) for i in ids])
    return out


def loo(model, test: Sequences) -> dict[str, float]:
    """HR@10 / NDCG@10 of the last items from 10-candidate lists (as served)."""
    lists = candidate_lists(model, trim_padding(test.histories), 10)
    hr = ndcg = 0.0
    for items, target in zip(lists, test.targets.tolist(), strict=True):
        if target in items:
            hr += 1
            ndcg += 1 / math.log2(items.index(target) + 2)
    n = len(lists)
    return {"hr@10": hr / n, "ndcg@10": ndcg / n}


def held_rows(held: list[list[int]], max_len: int) -> tuple[torch.Tensor, list[list[int]]]:
    histories, targets = [], []
    for s in held:
        cut = max(1, int(len(s) * 0.8))
        h = s[:cut][-max_len:]
        histories.append([0] * (max_len - len(h)) + h)
        targets.append(s[cut:])
    return torch.tensor(histories, dtype=torch.long), targets


def multi_target(model, held: list[list[int]], interests: torch.Tensor, n_items: int) -> dict[str, float]:
    histories, targets = held_rows(held, model.settings.max_len)
    lists = candidate_lists(model, histories, 50)
    r20 = r50 = hr50 = diversity = 0.0
    covered: set[int] = set()
    for items, want in zip(lists, targets, strict=True):
        want_set = set(want)
        r20 += len(want_set & set(items[:20])) / len(want_set)
        r50 += len(want_set & set(items)) / len(want_set)
        hr50 += bool(want_set & set(items))
        diversity += len({int(interests[i]) for i in items[:20]})
        covered.update(items)
    n = len(lists)
    return {
        "recall@20": r20 / n,
        "recall@50": r50 / n,
        "hr@50": hr50 / n,
        "distinct_interests@20": diversity / n,
        "coverage@50": len(covered) / n_items,
    }


def head_interests(train: Sequences, interests: torch.Tensor) -> set[int]:
    """The most engaged interests covering half of the training engagements."""
    engaged = interests[train.rows[train.rows > 0]]
    counts = torch.bincount(engaged[engaged > 0])
    order = counts.argsort(descending=True).tolist()
    total, running, head = int(counts.sum()), 0, set()
    for i in order:
        if running >= total / 2:
            break
        head.add(i)
        running += int(counts[i])
    return head


def conditional(conditional_model, single_model, held, interests: torch.Tensor, head: set[int]) -> dict[str, float]:
    """Recall@20 per (user, interest of their targets): conditioned + filtered vs post-filtered."""
    histories, targets = held_rows(held, single_model.settings.max_len)
    plain = candidate_lists(single_model, histories, 20)
    pairs = [(u, i) for u, want in enumerate(targets) for i in sorted({int(interests[t]) for t in want} - {0})]
    recalls: dict[str, list[float]] = {"head_conditional": [], "head_post": [], "tail_conditional": [], "tail_post": []}
    by_interest: dict[int, list[int]] = {}
    for u, i in pairs:
        by_interest.setdefault(i, []).append(u)
    for i, users in by_interest.items():
        rows = histories[users]
        lists = candidate_lists(
            conditional_model, rows, 20, interests=torch.full((len(users),), i), allowed=interests == i
        )
        group = "head" if i in head else "tail"
        for u, items in zip(users, lists, strict=True):
            want = {t for t in targets[u] if int(interests[t]) == i}
            recalls[f"{group}_conditional"].append(len(want & set(items)) / len(want))
            recalls[f"{group}_post"].append(len(want & {t for t in plain[u] if int(interests[t]) == i}) / len(want))
    out = {f"recall@20_{k}": (sum(v) / len(v) if v else float("nan")) for k, v in recalls.items()}
    out["head_pairs"], out["tail_pairs"] = len(recalls["head_post"]), len(recalls["tail_post"])
    return out


def _typed(base, values: dict[str, str]) -> dict[str, object]:
    """``values`` converted to the types of ``base``'s fields."""
    out: dict[str, object] = {}
    for key, value in values.items():
        current = getattr(base, key)
        if isinstance(current, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            out[key] = type(current)(value)
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def write_summary(args, dataset: str, results: dict[str, list[dict[str, float]]], inputs: dict[str, Any]) -> None:
    """The record of the seeds finished so far (``inputs.seeds`` says how many)."""
    seeds = len(next(iter(results.values())))
    figures = []
    for name, rows in results.items():
        for key in rows[0]:
            mean, sd = mean_sd([r[key] for r in rows])
            figures.append(Figure(f"{name} {key}", round(mean, 4)))
            figures.append(Figure(f"{name} {key} sd", round(sd, 4)))
    if "single" in results and "multi" in results:
        single_r50 = mean_sd([r["recall@50"] for r in results["single"]])[0]
        multi_r50 = mean_sd([r["recall@50"] for r in results["multi"]])[0]
        ratio = round(multi_r50 / max(single_r50, 1e-12), 4)
        figures.append(Figure("multi vs single recall@50 (ratio)", ratio, kind="derived", headline=True))
    if "recall@20_tail_post" in results.get("conditional", [{}])[0]:
        tail = results["conditional"]
        conditioned = mean_sd([r["recall@20_tail_conditional"] for r in tail])[0]
        post = mean_sd([r["recall@20_tail_post"] for r in tail])[0]
        gain = round(conditioned - post, 4)
        figures.append(Figure("tail recall@20 conditional minus post-filter", gain, kind="derived", headline=True))
    suffix = "" if args.evaluate_on == "test" else "_validation"
    write_record(
        Record(
            f"{args.name}_{dataset.lower()}{suffix}",
            f"Multi-interest (capsules, {args.interests}) and conditional vs single two-tower on S3-Rec {dataset}, "
            f"{seeds} seeds",
            "bench/multi_interest.py " + " ".join(sys.argv[1:]),
            figures,
            inputs={**inputs, "seeds": seeds, "per_seed": results},
        )
    )


def run_dataset(args, dataset: str, work: Path) -> None:
    data, section = load(work, args.data_root, dataset, args.set)
    train_users, test_users, validation_users = split_users(data.sequences)
    held = validation_users if args.evaluate_on == "validation" else test_users
    n_items = len(data.item_ids)
    base = dataclasses.replace(section.model, conditional=False)
    multi = {**MULTI, **dict(kv.split("=", 1) for kv in args.multi_set)}
    towers = {
        "single": base,
        "multi": dataclasses.replace(base, **_typed(base, multi), user_vectors=args.interests),
        "conditional": dataclasses.replace(base, conditional=True),
    }
    towers = {name: settings for name, settings in towers.items() if name in args.towers}
    split = leave_one_out(train_users, base.max_len)
    counts = counts_of(split.train, n_items)
    head = head_interests(split.train, data.interests)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in towers}
    inputs = {
        "dataset": dataset,
        "users": len(data.sequences),
        "train_users": len(train_users),
        "held_out_users": len(held),
        "evaluated_on": f"held-out {args.evaluate_on} users",
        "items": n_items,
        "interests": len(data.interest_names),
        "head_interests": len(head),
        "overrides": args.set,
        "settings": {name: dataclasses.asdict(s) for name, s in towers.items()},
        "training": dataclasses.asdict(section.training),
    }
    for seed in range(args.seeds):
        training = dataclasses.replace(section.training, seed=seed, progress=False)
        fitted = {}
        for name, settings in towers.items():
            fit = fit_members(
                n_items, settings, data.attributes, split.train, split.validation, counts, training, data.interests
            )
            model = fit.model
            fitted[name] = model
            row = {"best_epoch": fit.best_epoch, "train_seconds": fit.seconds}
            row.update({f"loo_{k}": v for k, v in loo(model, split.test).items()})
            row["loo_full_ranking_hr@10"] = evaluate(model, split.test).hr[10]
            row.update(multi_target(model, held, data.interests, n_items))
            results[name].append(row)
            print(f"{dataset} seed {seed} {name}: {row}", flush=True)
        if "conditional" in fitted and "single" in fitted:
            results["conditional"][-1].update(
                conditional(fitted["conditional"], fitted["single"], held, data.interests, head)
            )
            print(f"{dataset} seed {seed} conditional: {results['conditional'][-1]}", flush=True)
        # the record after every seed: a run cut short still leaves the seeds it finished
        write_summary(args, dataset, results, inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["Beauty", "LastFM"])
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--interests", type=int, default=4, help="capsule interests per user (M)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--set", action="append", default=[], help="config override for every model, KEY=VALUE")
    parser.add_argument(
        "--multi-set", action="append", default=[], help="two_tower.model setting of the multi tower only, KEY=VALUE"
    )
    parser.add_argument("--towers", nargs="+", default=["single", "multi", "conditional"])
    parser.add_argument(
        "--evaluate-on",
        choices=("test", "validation"),
        default="test",
        help="held-out users the protocols rank: validation ones to choose settings, test ones to report",
    )
    parser.add_argument("--name", default="multi_interest", help="record name prefix")
    args = parser.parse_args()
    configure_logging()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pinpipe-multi-interest-"))
    for dataset in args.datasets:
        run_dataset(args, dataset, work)


if __name__ == "__main__":
    main()
