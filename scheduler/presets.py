"""Ready-made service configs for `voicepulse demo` and quick trials: production-shaped rules
(availability SLO with the default burn tiers, a 30 m vs 24 h TTFA regression rule) squeezed by
`time_scale` into a run of a given length."""

from __future__ import annotations

from scheduler.config import ProbeJob, RegressionRule, ServiceConfig, Slo


def demo_service_config(targets: list[str], seconds: float, *, agent: str = "demo",
                        every_s: float = 3.0, scenario: str = "default",
                        min_samples: int = 5) -> ServiceConfig:
    """Probe each target every `every_s` real seconds for a run of `seconds`.

    The regression rule's recent window (30 m as written) becomes a quarter of the run (at least
    8 s and five probe intervals), so a regression injected half way through fires well before
    the end; evaluation runs every second of real time. Use a short scenario (a session well
    under `every_s`), or runs are skipped and the windows hold too few samples.
    """
    recent_real = max(8.0, seconds / 4.0, 5.0 * every_s)
    scale = recent_real / 1800.0
    return ServiceConfig(
        agent=agent,
        time_scale=scale,
        probes=[ProbeJob(t, scenario, every_s=every_s / scale) for t in targets],
        slos=[Slo(f"{t}-availability", t, "availability", objective=0.99) for t in targets],
        regressions=[RegressionRule(f"{t}-ttfa-regression", t, metric="ttfa_ms",
                                    recent_s=1800.0, baseline_s=86400.0, min_effect=0.15,
                                    min_samples=min_samples, keep_firing_s=3.0 / scale)
                     for t in targets],
        evaluate_every_s=1.0 / scale,
        status_port=0,
        shutdown_timeout_s=5.0,
    )
