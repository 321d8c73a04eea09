"""Round 1 of a config through the stages, in a fresh run directory; prints its metrics without the
timings, as one JSON line, so two checkouts can be compared (a refactor must not change them):

    python tools/round_metrics.py configs/cpu_demo.yaml /tmp/run-a > a.txt   # in each checkout
"""
import json
import sys

if __name__ == "__main__":
    try:
        from evolution import stages
    except ImportError:
        from evomath import stages
    from evomath.config import load_config
    config = load_config(sys.argv[1]).model_copy(update={"run_dir": sys.argv[2], "rounds": 1})
    results = stages.run_round(stages.round_context(config, 1))
    drop = ("seconds", "stage_seconds", "tokens_per_s", "pairs_per_s", "artifacts", "out_dir", "resumed_problems")
    clean = {st: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in m.items() if k not in drop and not k.endswith("/seconds")}
             for st, m in results.items()}
    print("METRICS " + json.dumps(clean, sort_keys=True))
