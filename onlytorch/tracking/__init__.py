"""Experiment trackers that mirror a training run elsewhere: TensorBoard event files in the run
directory (tensorboard.py) and an MLflow run (mlflow_tracker.py). The hub (hub.py) is what the
training calls; wiring.py decides which trackers a fit runs. Nothing here imports tensorboardX,
tensorboard or mlflow until a tracker is started: ``import onlytorch`` stays light."""
