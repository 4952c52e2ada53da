"""The segment task (segmentation): its row of the task table (``task``), plugin base, result, runner, training recipe,
evaluation and command bodies."""
