"""The sweep: Ray Tune driver, trainable, Optuna study, search space, ranking (see README, where things live)."""
