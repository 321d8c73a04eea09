"""Verifiers side by side: every reward model of evomath on the very same samples, with intervals.

    python benchmarks/verifiers.py --work runs/verifiers [--policy DIR] [--test-problems 256]

Phases, each cached under --work (a rerun resumes; delete a phase's files to redo it):

1. **Training trees**: MCTS with the policy on ``--train-problems`` of ``--train`` (gold rewards),
   the data every tree-trained verifier learns from (rStar trains its PPM, ORM and PQM on one round's
   trees).
2. **Annotations**: Math-Shepherd's completer on ``--annotate-problems`` of them (``--samples``
   solutions, ``--completions`` continuations per step).
3. **Verifiers**: PPM (step pairs), ORM (whole-solution pairs), PQM (step Q), PRM (completer
   labels, hard or soft), PRM-trees (a node's correct-answer share from the trees, for free),
   PRM-ruled (the same, with every step the arithmetic rule stops marked failing as
   ``search.check_arithmetic`` marks it, so no answer reached through it counts: still gold-free at test time),
   PRM-checked (the same trajectories labelled by the demo generator's exact step checker: what
   PRM800K's human labels are on MATH, the ceiling automatic labels are measured against), and
   AlphaMath's value head (trained jointly with SFT on the trees' best solutions); beside them the
   ``arithmetic`` rule (evomath.arithmetic, no model, no gold: +1 for a step whose equations hold on
   numbers the question gives or earlier steps computed, -1 else), what running a step's code is
   for rStar; and each model behind the rule (``prm-trees+arithmetic``: the model ranks the samples
   the rule lets through), as rStar keeps only steps whose code runs and ranks those by its PPM.
4. **Evaluation**: ``--k`` samples per test problem (held out: ``--test``), scored once by every
   verifier (cached in ``scores.json``): maj@k, pass@k, and each one's best-of-k (weakest step and
   last step), weighted vote, and filtered vote (the majority among the samples its step rule does not
   flag); accuracy with a Wilson interval, each method minus maj@k with a paired bootstrap interval.
5. **Step level** (ProcessBench): the exact step checker of the demo generator labels the first wrong
   step of every sample; a verifier predicts it as its first step scored below 0 (a PRM's p < 1/2),
   or, cross-fitted over two halves of the problems, below a threshold or falling by more than a
   drop fit on the other half (evaluation/steps.py); F1 is the harmonic mean of its accuracy on
   erroneous and on correct samples. Beside it, each verifier's share of erroneous samples located
   exactly at the fixed cut minus PRM-trees' on the same samples (problems resampled), and what
   always naming step 0 scores.

Writes ``report.json`` and prints the tables. The step level needs demo problems (their known values).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VERIFIERS = ("ppm", "orm", "pqm", "prm", "prm-trees", "prm-ruled", "prm-checked", "value", "arithmetic")


def phase(path: Path, what: str):
    """Print what a phase does; True if its output exists already (cached)."""
    done = path.exists()
    print(f"== {what}: {'cached in' if done else 'writing'} {path}", flush=True)
    return done


def search_env(config, policy: str, engine, search):
    from evomath.formats import make_format
    from evomath.grading import Grader
    from evomath.sandbox import Sandbox
    from evomath.search import SearchEnv

    fmt = make_format(search.step_format, search.prompt_style, chat=engine.chat_prompt)
    return SearchEnv(engine, fmt, search, Sandbox(config.sandbox), Grader(workers=1)), fmt


def train_trees(args, config, engine) -> Path:
    from evomath.files import append_jsonl
    from evomath.problems import load_benchmark
    from evomath.search import mcts

    out = args.work / "train-trees.jsonl"
    if phase(out, f"MCTS on {args.train_problems} training problems"):
        return out
    search = config.search.model_copy(update={"prompt_style": "chat", "seed": 1})
    env, _ = search_env(config, args.policy, engine, search)
    problems = load_benchmark(args.train, limit=args.train_problems, seed=0)
    tmp = out.with_suffix(".partial")
    done = {json.loads(line)["problem_id"] for line in tmp.open()} if tmp.exists() else set()
    with env.sandbox, env.grader:
        mcts([p for p in problems if p.id not in done], env, on_tree_done=lambda t: append_jsonl(tmp, [t.to_dict()]))
    tmp.replace(out)
    return out


def annotations(args, config, engine) -> Path:
    from evomath.files import append_jsonl, resume_jsonl
    from evomath.problems import load_benchmark
    from evomath.search.annotate import annotate

    out = args.work / "annotations.jsonl"
    if phase(out, f"completer on {args.annotate_problems} problems ({args.samples} samples, {args.completions} "
                  "continuations a step)"):
        return out
    search = config.search.model_copy(update={"prompt_style": "chat", "temperature": args.temperature, "seed": 2})
    env, _ = search_env(config, args.policy, engine, search)
    problems = load_benchmark(args.train, limit=args.annotate_problems, seed=1)
    tmp = out.with_suffix(".partial")
    done = {r["problem_id"] for r in resume_jsonl(tmp)}
    with env.sandbox, env.grader:
        _, sampling, completing = annotate([p for p in problems if p.id not in done], env, samples=args.samples,
                                           completions=args.completions, on_problem_done=lambda rows: append_jsonl(tmp, rows))
    print(f"   completer: {completing.generated_tokens} tokens in {completing.seconds:.0f} s "
          f"({completing.tokens_per_second:.0f} tok/s)")
    tmp.replace(out)
    return out


def train_verifiers(args, config, trees: Path, notes: Path, policy_dir: Path) -> dict[str, Path | None]:
    from evaluation.runs import GATES  # the verifiers that are a rule, not a trained model
    from evomath.formats import make_format
    from evomath.problems import load_benchmark
    from evomath.tree import read_trees
    from training.ppm import train_ppm
    from training.ppm_pairs import make_pairs
    from training.sft_data import chat_fn, make_sft_data
    from training.step_rewards import (
        annotation_rows,
        checked_step_rows,
        mark_underived,
        read_annotations,
        train_step_reward,
        tree_step_rows,
        write_step_rows,
    )
    from training.value_head import train_value_head

    fmt = make_format(config.search.step_format)
    train = config.ppm.model_copy(update={"max_pairs": None})
    dirs = {}
    for kind in args.verifiers:
        if kind in GATES:
            dirs[kind] = None
            continue
        out = args.work / "verifiers" / kind
        dirs[kind] = out
        if phase(out, f"train {kind}"):
            continue
        data = args.work / "data"
        data.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if kind in ("ppm", "orm"):
            make_pairs(trees, data / f"{kind}.jsonl", fmt, train, outcome_only=kind == "orm")
            metrics = train_ppm(data / f"{kind}.jsonl", policy_dir, out, train, progress=False, kind=kind)
        elif kind == "pqm":
            write_step_rows(data / "q.jsonl", tree_step_rows(read_trees(trees), fmt, "q"))
            metrics = train_step_reward(data / "q.jsonl", policy_dir, out, train, "pqm", progress=False)
        elif kind == "prm-trees":
            write_step_rows(data / "tree-mc.jsonl", tree_step_rows(read_trees(trees), fmt, config.prm.labels))
            metrics = train_step_reward(data / "tree-mc.jsonl", policy_dir, out, config.prm, "prm", progress=False)
        elif kind == "prm-ruled":  # the tree labels with the rule's failing steps marked
            rows = tree_step_rows(mark_underived(read_trees(trees)), fmt, config.prm.labels)
            write_step_rows(data / "tree-ruled.jsonl", rows)
            metrics = train_step_reward(data / "tree-ruled.jsonl", policy_dir, out, config.prm, "prm", progress=False)
        elif kind == "prm-checked":  # the same trajectories, labelled by the exact step checker
            problems = {p.id: p for p in load_benchmark(args.train, limit=args.train_problems, seed=0)}
            write_step_rows(data / "checked.jsonl", checked_step_rows(read_trees(trees), fmt, problems))
            metrics = train_step_reward(data / "checked.jsonl", policy_dir, out, config.prm, "prm", progress=False)
        elif kind == "prm":
            notes_rows = read_annotations(notes, config.prm.labels)
            write_step_rows(data / "completer.jsonl", annotation_rows(notes_rows, fmt, config.prm.labels))
            metrics = train_step_reward(data / "completer.jsonl", policy_dir, out, config.prm, "prm", progress=False)
        else:  # value: SFT on the trees' best solutions + beta * MSE to every step's Q
            sft_fmt = make_format(config.search.step_format, "chat", chat=chat_fn(policy_dir))
            make_sft_data(trees, data / "sft.jsonl", sft_fmt)
            write_step_rows(data / "q.jsonl", tree_step_rows(read_trees(trees), fmt, "q"))
            metrics = train_value_head(data / "sft.jsonl", data / "q.jsonl", policy_dir, out, config.value,
                                       progress=False)
        print(f"   {kind}: {time.perf_counter() - start:.0f} s, {json.dumps(_numbers(metrics))}", flush=True)
    return dirs


def _numbers(metrics: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def test_samples(args, config, engine) -> Path:
    from evomath.files import write_jsonl
    from evomath.problems import load_benchmark
    from evomath.search import best_of_n

    out = args.work / f"test-samples{args.suffix}.jsonl"
    if phase(out, f"{args.k} samples on {args.test_problems} test problems (seed {args.sample_seed})"):
        return out
    search = config.eval_search.model_copy(update={"prompt_style": "chat", "temperature": args.temperature,
                                                   "seed": args.sample_seed})
    env, _ = search_env(config, args.policy, engine, search)
    with env.sandbox, env.grader:
        trees, stats = best_of_n(load_benchmark(args.test, limit=args.test_problems, seed=0), env, args.k)
    write_jsonl(out, (t.to_dict() for t in trees))
    print(f"   {stats.generated_tokens} tokens in {stats.seconds:.0f} s ({stats.tokens_per_second:.0f} tok/s)")
    return out


def step_scores(args, trees, dirs: dict[str, Path | None]) -> tuple[dict[str, list[dict[int, float]]], dict[str, float]]:
    """Every verifier's score of every step of every answered sample, cached in ``scores.json``
    (scoring is the slow part: about 5 minutes a verifier for 2,048 samples on 2 cores)."""
    from evaluation.runs import GATES, score_chains
    from evomath.files import write_json
    from evomath.scoring import load_scorer

    path = args.work / f"scores{args.suffix}.json"
    cached = json.loads(path.read_text()) if path.exists() else {"scores": {}, "seconds": {}}
    for name, directory in dirs.items():
        if name in cached["scores"]:
            continue
        print(f"== score the samples with {name}", flush=True)
        scorer = GATES[name] if name in GATES else load_scorer(directory, kind="prm" if name.startswith("prm") else name)
        began = time.perf_counter()
        cached["scores"][name] = [{str(k): v for k, v in per.items()} for per in score_chains(trees, scorer)]
        cached["seconds"][name] = time.perf_counter() - began
        if hasattr(scorer, "close"):
            scorer.close()
        write_json(path, cached)
    scores = {name: [{int(k): v for k, v in per.items()} for per in cached["scores"][name]] for name in dirs}
    return scores, {name: cached["seconds"][name] for name in dirs}


def gated(trees, scores: dict[str, list[dict[int, float]]]) -> dict[str, list[dict[int, float]]]:
    """Each trained verifier behind each rule (``ppm+arithmetic``: the PPM's order among the samples
    the arithmetic rule lets through, evaluation.runs.gated_scores), scored by every method as a
    verifier of its own: does the rule's veto add to what the model ranks?"""
    from evaluation.runs import GATES, gated_scores

    return {f"{model}+{rule}": gated_scores(trees, scores[model], scores[rule])
            for rule in GATES if rule in scores for model in scores if model not in GATES}


def step_cases(args, trees, scores: dict[str, list[dict[int, float]]]) -> dict[str, list]:
    """Per verifier, one StepCase per answered sample: its step scores and the exact first wrong step."""
    from evaluation.select import chains, is_answer
    from evaluation.steps import StepCase
    from evomath.demo_data import first_error
    from evomath.problems import load_benchmark

    problems = {p.id: p for p in load_benchmark(args.test, limit=args.test_problems, seed=0)}
    answered = [(i, chain) for i, tree in enumerate(trees) for chain in chains(tree) if is_answer(chain[-1])]
    truths = [first_error(problems[trees[i].problem_id], [n.text for n in chain]) for i, chain in answered]
    return {name: [StepCase(trees[i].problem_id, tuple(per[i][n.id] for n in chain if n.id in per[i]), truth)
                   for (i, chain), truth in zip(answered, truths, strict=True)]
            for name, per in scores.items()}


def verdicts(args, trees, scores: dict[str, list[dict[int, float]]], cases: dict[str, list]) -> dict[str, list[bool]]:
    """Every method's per-problem outcome on the same samples. The filtered votes drop the samples
    a verifier's cross-fitted step rule flags (the rule fit on the other half of the problems)."""
    from evaluation.methods import Sampled, parse_method
    from evaluation.runs import Run
    from evaluation.select import chains, is_answer, solution
    from evaluation.steps import RULES, cross_fitted_rules, filtered_vote

    run = Run("samples", [[t] for t in trees], samples=args.k, step_scores=scores)
    k = args.k
    methods = [parse_method(f"maj@{k}"), parse_method(f"pass@{k}")]
    for name in scores:
        methods += [Sampled(f"{name}-bon@{k}", f"{name}-bon", k=k, rm=name),
                    Sampled(f"{name}-bon-last@{k}", f"{name}-bon", k=k, agg="last", rm=name),
                    Sampled(f"{name}-vote@{k}", f"{name}-vote", k=k, rm=name)]
    outcomes = {}
    for method in methods:
        outcomes[method.name] = [bool(c.selected and c.selected.correct)
                                 for c, _ in (method.choose(run, i) for i in range(len(trees)))]
    for name in scores:
        for rule_name in RULES:
            rules = cross_fitted_rules(cases[name], rule_name, seed=args.seed)
            picks = []
            for i, tree in enumerate(trees):
                candidates = [solution(tree, chain[-1], step_scores=scores[name][i])
                              for chain in chains(tree)[:k] if is_answer(chain[-1])]
                rule = rules.get(tree.problem_id)
                chosen = filtered_vote(candidates, rule) if rule else None
                picks.append(bool(chosen and chosen.correct))
            outcomes[f"{name}-filter-{rule_name}@{k}"] = picks
    return outcomes


def step_level(args, cases: dict[str, list]) -> dict[str, dict]:
    """ProcessBench's F1 of each verifier: at the fixed cut (score < 0, a PRM's p < 1/2) and with
    each rule cross-fitted over halves of the problems (evaluation/steps.py)."""
    from dataclasses import asdict

    from evaluation.steps import RULES, Rule, cross_fitted_score, step_score

    out = {}
    for name, per in cases.items():
        out[name] = {"fixed": asdict(step_score(per, Rule("threshold", 0.0).predict))}
        for rule_name in RULES:
            score, rules = cross_fitted_score(per, rule_name, seed=args.seed)
            out[name][rule_name] = asdict(score) | {"cuts": [round(r.cut, 4) for r in rules]}
    return out


def located_against(cases: dict[str, list], reference: str = "prm-trees") -> dict[str, str]:
    """Each verifier's share of erroneous samples whose first wrong step it names at the fixed cut
    (the step level's "fixed" row) minus the reference verifier's on the same samples (problems
    resampled with all their samples), and what always naming step 0 would score: does a verifier
    locate errors beyond where they usually are?"""
    from evaluation.stats import paired_bootstrap
    from evaluation.steps import Rule

    if reference not in cases:
        return {}
    rule = Rule("threshold", 0.0)
    erroneous = [c for c in cases[reference] if c.first_error is not None]
    if not erroneous:
        return {}
    located = {name: [rule.predict(c) == c.first_error for c in per if c.first_error is not None]
               for name, per in cases.items()}
    problems = [c.problem_id for c in erroneous]
    out = {"step 0 always": f"{100 * sum(c.first_error == 0 for c in erroneous) / len(erroneous):.1f}%"}
    for name, hits in located.items():
        if name != reference:
            out[f"{name} - {reference}"] = paired_bootstrap(hits, located[reference], groups=problems).points()
    return out


def report(args, outcomes: dict[str, list[bool]], steps: dict, located: dict[str, str], timings: dict) -> dict:
    from evaluation.stats import accuracy_interval, paired_bootstrap

    base = outcomes[f"maj@{args.k}"]
    rows = []
    for name, correct in outcomes.items():
        row = {"method": name, "accuracy": accuracy_interval(correct).percent()}
        if not name.startswith(("maj@", "pass@")):
            diff = paired_bootstrap(correct, base)
            row |= {"minus_maj": diff.points(), "above_maj": diff.low > 0, "diff": diff.estimate}
        rows.append(row)
    print(f"\n{len(base)} test problems, {args.k} samples each (the same for every method)")
    for row in rows:
        print(f"  {row['method']:30s} {row['accuracy']:24s} {row.get('minus_maj', '')}")
    print("\nstep level (ProcessBench F1 against the exact checker; fixed: score < 0; threshold / drop: "
          "the cut fit on the other half of the problems)")
    for name, by_rule in steps.items():
        for rule, s in by_rule.items():
            print(f"  {name:12s} {rule:9s} F1 {100 * s['f1']:5.1f}  erroneous {100 * s['erroneous_accuracy']:5.1f}% "
                  f"of {s['erroneous_samples']}  correct {100 * s['correct_accuracy']:5.1f}% of {s['correct_samples']}"
                  + (f"  cuts {s['cuts']}" if "cuts" in s else ""))
    if located:
        print("\nfirst wrong step named exactly (fixed cut) on the erroneous samples, paired by problem")
        for name, text in located.items():
            print(f"  {name:28s} {text}")
    data = {"problems": len(base), "k": args.k, "rows": rows, "step_level": steps, "located": located,
            "seconds": timings}
    (args.work / f"report{args.suffix}.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/verifiers"),
                        help="where every phase caches its output (a rerun resumes)")
    parser.add_argument("--config", type=Path, default=Path("configs/cpu_demo.yaml"),
                        help="engine, search and training settings")
    parser.add_argument("--policy", default=None, help="the policy that samples (default: the config's)")
    parser.add_argument("--train", default="demo_train:1-2", help="benchmark the verifiers learn from")
    parser.add_argument("--test", default="demo_test:1-2", help="held-out benchmark they are measured on")
    parser.add_argument("--train-problems", type=int, default=200, help="problems searched by MCTS for training trees")
    parser.add_argument("--annotate-problems", type=int, default=100,
                        help="problems the Math-Shepherd completer annotates (the prm verifier only)")
    parser.add_argument("--samples", type=int, default=4, help="solutions sampled per annotated problem")
    parser.add_argument("--completions", type=int, default=4, help="completer continuations per step")
    parser.add_argument("--test-problems", type=int, default=256, help="held-out problems")
    parser.add_argument("--k", type=int, default=8, help="samples per test problem (maj@k, pass@k, best-of-k)")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature of tests and completer")
    parser.add_argument("--verifiers", default=",".join(VERIFIERS),
                        help=f"comma-separated, any of {', '.join(VERIFIERS)}")
    parser.add_argument("--seed", type=int, default=0, help="how problems are split into the cross-fitting halves")
    parser.add_argument("--sample-seed", type=int, default=3,
                        help="the test samples' seed; another seed samples (and scores) again beside the first, in "
                        "test-samples-seed<N>.jsonl, scores-seed<N>.json, report-seed<N>.json")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field, e.g. --set prm.epochs=2 (repeatable)")
    args = parser.parse_args(argv)
    args.verifiers = [v for v in args.verifiers.split(",") if v]
    unknown = [v for v in args.verifiers if v not in VERIFIERS]
    if unknown or not args.verifiers:
        parser.error(f"--verifiers: {', '.join(unknown) or 'none given'}: choose among {', '.join(VERIFIERS)}")
    args.suffix = "" if args.sample_seed == 3 else f"-seed{args.sample_seed}"

    from evomath import engines
    from evomath.config import apply_overrides, load_config
    from evomath.models import resolve_model
    from evomath.tree import read_trees

    config = apply_overrides(load_config(args.config), args.overrides)
    args.policy = args.policy or config.policy
    policy_dir = Path(resolve_model(args.policy))
    args.work.mkdir(parents=True, exist_ok=True)
    timings = {}
    began = time.perf_counter()
    engine = engines.get_backend(str(policy_dir), config.engine)
    trees = train_trees(args, config, engine)
    notes = annotations(args, config, engine) if "prm" in args.verifiers else None
    samples = test_samples(args, config, engine)
    timings["generation"] = time.perf_counter() - began
    engines.release()
    began = time.perf_counter()
    dirs = train_verifiers(args, config, trees, notes, policy_dir)
    timings["training"] = time.perf_counter() - began
    test_trees = list(read_trees(samples))
    scores, timings["per_verifier_scoring"] = step_scores(args, test_trees, dirs)
    scores |= gated(test_trees, scores)
    cases = step_cases(args, test_trees, scores)
    report(args, verdicts(args, test_trees, scores, cases), step_level(args, cases), located_against(cases), timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
