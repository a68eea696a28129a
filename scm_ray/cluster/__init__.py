"""Cluster helpers behind `scm-ray cluster check`: cli.py (the command), check.py (cluster
launcher YAMLs, KubeRay manifests, runtime envs) and ray_private.py (the only Ray internals
scm-ray uses, each named once, for a pinned Ray range; tests/cluster/test_ray_private.py fails
loudly when one of them moves)."""
