"""Does it learn: CartPole-v1 with the settings found by scripts/tune_gym.py (~2 s, so it is
not marked slow)."""

import numpy as np

from esvo.core import Strategy, make_optimizer
from esvo.core.running_stat import RunningStat
from esvo.parallel import SerialEvaluator
from esvo.protocol import GenerationSpec


def test_cartpole_linear_snes_reaches_475_within_20_generations():
    spec = {"kind": "gym", "env_id": "CartPole-v1", "policy": {"kind": "linear"}}
    strategy = Strategy(
        10,
        maximize=True,
        distribution="separable",
        num_pairs=8,
        sigma_init=0.5,
        shaping="nes",
        optimizer=make_optimizer("sgd", lr=1.0),
        seed=0,
    )
    evaluator = SerialEvaluator(spec, strategy.noise.spec())
    state = strategy.init(evaluator.objective.initial_params(0))
    stats = RunningStat.zeros(4)
    best = -np.inf
    for gen in range(20):
        norm = (stats.mean, stats.std()) if stats.count else (None, None)
        ask = strategy.ask(state)
        res = evaluator.evaluate(GenerationSpec(gen, state.mean, state.sigma, 0, *norm), ask.ids)
        state, _ = strategy.tell(state, ask, res.fitness)
        o = res.obs_stats
        stats = stats.merge_sums(o.count.sum(), o.sum.sum(0), o.sumsq.sum(0))
        norm = (stats.mean, stats.std())
        returns, *_ = evaluator.evaluate_mean(
            GenerationSpec(gen + 1, state.mean, state.sigma, 0, *norm), 20
        )
        best = max(best, returns.mean())
        if best >= 475:
            break
    assert best >= 475
