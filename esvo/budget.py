"""Step-budgeted populations and the adaptive episode cutoff: pure rules of returned counts.

Both come from OpenAI's ES starter (Salimans et al. 2017; ``timesteps_per_batch`` and
``episode_cutoff_mode = adaptive:<tslimit>,<thresh>,<ratio>``), EvoTorch has the first as
``num_interactions`` / ``popsize_max``. Here both are functions of the step counts and cap hits
the workers return, never of timing or of which worker finished first, so a run stays a pure
function of its config and seed (the trainer applies them; research.md §(f)).

**Waves.** A budgeted generation scores pairs ``0, 1, 2, ...`` (their ids are the fixed
sequence ``perturbation_ids(seed, generation, k)``) in waves of contiguous pair indices. After
``n`` pairs that used ``S`` steps, ``StepBudget.next_wave`` says how many come next:

- none when ``S >= env_steps`` or ``n >= max_pairs`` (the generation is complete);
- ``min_pairs`` first;
- then the pairs still missing at the steps per pair seen so far,
  ``ceil((env_steps - S) * n / S)``, in integers; at least ``ceil(min_pairs / 4)`` (an
  estimate that falls a little short does not cost a string of one-pair waves, each a round
  trip to the workers), at most what is left to ``max_pairs``; all of that when ``S = 0`` (an
  objective without environment steps reaches ``max_pairs`` in two waves).

Every wave is scored under the generation's one ``GenerationSpec`` (same mean, same frozen
observation normalizer); the update shapes all the generation's pairs together, the
normalizer merges the observations of all waves in pair order, ``num_pairs`` and
``gen_env_steps`` count all waves, and only training steps count: the evaluation of the mean
is neither part of the budget nor of ``env_steps``.

**Cutoff.** Training episodes are truncated at ``cap`` steps; after a generation in which at
least ``threshold`` of the training episodes were cut there (``EpisodeCutoff.next_cap``), the
cap grows to ``max(cap + 1, int(growth * cap))``, never beyond the environment's own limit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepBudget:
    """Pairs per generation by environment steps: at least ``env_steps`` or ``max_pairs``."""

    env_steps: int
    min_pairs: int
    max_pairs: int

    def __post_init__(self) -> None:
        if not 1 <= self.min_pairs <= self.max_pairs or self.env_steps < 1:
            raise ValueError(
                "need env_steps >= 1 and 1 <= min_pairs <= max_pairs, got "
                f"env_steps={self.env_steps}, min_pairs={self.min_pairs}, "
                f"max_pairs={self.max_pairs}"
            )

    @property
    def min_wave(self) -> int:
        """The smallest wave after the first: ``ceil(min_pairs / 4)``."""
        return -(-self.min_pairs // 4)

    def next_wave(self, pairs: int, steps: int) -> int:
        """Pairs of the next wave after ``pairs`` pairs used ``steps`` training steps; 0 when
        the generation is complete."""
        left = self.max_pairs - pairs
        if steps >= self.env_steps or left <= 0:
            return 0
        if pairs == 0:
            return min(self.min_pairs, left)
        if steps <= 0:
            return left
        missing = -(-(self.env_steps - steps) * pairs // steps)  # ceil, exact in integers
        return min(left, max(missing, self.min_wave))

    def waves(self, pair_steps: list[int]) -> list[int]:
        """The wave sizes this rule gives when pair ``k`` takes ``pair_steps[k]`` steps (both
        members); for tests and planning. ``pair_steps`` must cover every pair scored."""
        sizes: list[int] = []
        pairs = steps = 0
        while size := self.next_wave(pairs, steps):
            sizes.append(size)
            steps += sum(pair_steps[pairs : pairs + size])
            pairs += size
        return sizes


@dataclass(frozen=True)
class EpisodeCutoff:
    """The adaptive step cap of training episodes; ``limit``: the environment's own (None:
    unbounded)."""

    initial: int
    growth: float = 2.0
    threshold: float = 0.5
    limit: int | None = None

    def next_cap(self, cap: int, capped: int, episodes: int) -> int:
        """The next generation's cap after ``capped`` of ``episodes`` training episodes were
        cut at ``cap``."""
        if episodes <= 0 or capped < self.threshold * episodes:
            return cap
        grown = max(cap + 1, int(self.growth * cap))
        return grown if self.limit is None else min(grown, max(cap, self.limit))


__all__ = ["EpisodeCutoff", "StepBudget"]
