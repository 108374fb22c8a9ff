"""The devcluster's kwok-like pod runner: the controllers and kubelet of one fake node.

The kwok-like pod runner: Job controller, scheduler and kubelet of one fake node
(``devcluster.runner.podrunner.PodRunner`` puts them together)."""
