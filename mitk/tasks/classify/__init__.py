"""The classify task (classification): its row of the task table (``task``), plugin base, result, runner, training
recipe, evaluation and command bodies."""
