"""The sweep's model policy `artifacts.model=best`: at its end, only the best configurations keep
their logged MLflow Models, the others' are deleted and purged with MLflow's own `mlflow gc`."""

from __future__ import annotations

from lstm_mnist.tracking import SweepRun, names
from lstm_mnist.tracking.ranking import ranked_configurations


def keep_best_models(sweep: SweepRun, keep: int) -> tuple[int, int]:
    """Delete the logged models of every job outside the `keep` configurations with the best
    mean objective, and purge their files with MLflow's own `mlflow gc`; return (models
    kept, models deleted). The parent records it in its `models_kept` tag."""
    client, children = sweep.store.client, sweep.children()
    groups = ranked_configurations(sweep.objective, sweep.finished())
    kept_runs = {r.info.run_id for group in groups[:keep] for r in group}
    experiment_id = client.get_run(sweep.run_id).info.experiment_id
    models = [
        model
        for run in children
        for model in client.search_logged_models(
            [experiment_id], f"source_run_id = '{run.info.run_id}'"
        )
    ]
    doomed = [m for m in models if m.source_run_id not in kept_runs]
    for model in doomed:
        client.delete_logged_model(model.model_id)
    if doomed:
        sweep.store.gc(logged_model_ids=[m.model_id for m in doomed])
    kept = sum(m.source_run_id in kept_runs for m in models)
    client.set_tag(sweep.run_id, names.MODELS_KEPT, f"{kept} of {kept + len(doomed)}")
    return kept, len(doomed)
