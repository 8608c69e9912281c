"""Training: from checked command-line options to snapshots on disk.

    config.py       TrainOptions (the command line), presets, TrainingConfig (the resolved run)
    launch.py       checks that need files, the run folder, starting the ranks
    distributed.py  process groups, spawned ranks and torchrun, the collectives the loop needs
    loop.py         the loop: ticks, snapshots, metrics, exact resume
    step.py         one optimizer step per phase: latents, accumulation, EMA, non-finite steps
    loss.py         the StyleGAN2/StyleGAN3 objective (non-saturating loss, R1, path length)
    augment.py      ADA: the augmentation pipe and the heuristic that tunes its probability
    snapshot.py     network-snapshot-*.pt: a checkpoint plus everything a resume needs
    monitor/        log.txt, stats.jsonl, TensorBoard, image grids, plots.png

The data flows one way: dataset -> augment -> loss(G, D) -> optimizer step -> EMA ->
snapshot/metrics. May import: `ops`, `stylegan.networks`, `stylegan.data`, `stylegan.checkpoint`,
`stylegan.legacy`, `stylegan.files`, `metrics`. Nothing below this package imports it.
"""
