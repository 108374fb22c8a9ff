"""The kwok-like pod runner: Job controller, scheduler and kubelet of one fake node
(``devcluster.runner.podrunner.PodRunner`` puts them together)."""
