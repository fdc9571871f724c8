"""Running a training: the loop (`trainer`), what happens around it (`callbacks`: progress,
metrics, checkpoints, curves, summaries), checkpoint files, run directories and the report
written when the loss stops being finite."""
