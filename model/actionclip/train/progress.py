"""Progress reporting: a tqdm bar (loss, lr, clips/s, ETA) or, in quiet mode, a plain line per epoch on stderr."""
from __future__ import annotations

import sys
import time

# steps before the throughput clock starts: compilation, allocator and loader warm-up are not steady-state speed
WARMUP_STEPS = 5


class Progress:
    """Tracks optimiser steps of one training run and shows them.

    Args:
        total_steps: optimiser steps the run will take in all (for the ETA).
        start_step: steps already done (after a resume).
        enabled: False on ranks other than 0.
        quiet: no bar; :meth:`epoch_done` prints one summary line instead.
    """

    def __init__(self, total_steps: int, start_step: int = 0, enabled: bool = True, quiet: bool = False,
                 desc: str = "train") -> None:
        self.enabled = enabled
        self.quiet = quiet
        self.total = total_steps
        self.start_step = start_step
        self.t0 = time.perf_counter()
        self.clips = 0
        self.steps = 0
        self.last = self.t0  # time of the latest step
        self.warm: tuple[float, int] | None = None  # (time, clips) when warm-up ended
        self.bar = None
        if enabled and not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True,
                            file=sys.stderr)

    @property
    def clips_per_s(self) -> float:
        """Clips per second from the end of the first ``WARMUP_STEPS`` steps of this process (before that: from the
        start) to the latest step, so time spent after it (a final checkpoint, validation) does not count."""
        t, clips = self.warm or (self.t0, 0)
        return (self.clips - clips) / max(self.last - t, 1e-9)

    def step(self, step: int, clips: int, loss: float, lr: float) -> None:
        self.clips += clips
        self.steps += 1
        self.last = time.perf_counter()
        if self.steps == WARMUP_STEPS:
            self.warm = (self.last, self.clips)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", clips_s=f"{self.clips_per_s:.1f}", refresh=False)
            self.bar.update(1)

    def epoch_done(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        done = step - self.start_step
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.total - step) if done else float("nan")
        text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        line = f"epoch {epoch} step {step}/{self.total} {text} clips/s={self.clips_per_s:.1f} eta={eta:.0f}s"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
